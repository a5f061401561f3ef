//! The bounded contexts of baedal. Each module owns its database (its own SQLite
//! file, or its own Postgres schema), its read model and the activities the
//! order workflow may ask of it. No context reads another's tables.

pub mod config;
pub mod db;
pub mod delivery;
pub mod geo;
pub mod identity;
pub mod keyfile;
pub mod notification;
pub mod order;
pub mod page;
pub mod payment;
pub mod runtime;
pub mod shop;
pub mod time;

pub use config::{Config, DatabaseUrl};
