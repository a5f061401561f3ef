//! The contract crate: the `OrderFulfillment` workflow, the wire types every
//! context shares, task-queue names and the activity contracts. Nothing here
//! performs I/O or reads a clock, which keeps the workflow deterministic.

pub mod activities;
pub mod model;
pub mod order;
pub mod reconcile;

pub use model::*;
pub use order::OrderFulfillment;
pub use reconcile::{PaymentReconciliation, ReconcileInput};

/// Task queue the order workflow runs on.
pub const ORDER_FULFILLMENT_QUEUE: &str = "order-fulfillment";

/// The five bounded contexts; each runs its activities on its own task queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Context {
    Order,
    Payment,
    Shop,
    Delivery,
    Notification,
}

impl Context {
    pub const ALL: [Context; 5] = [
        Context::Order,
        Context::Payment,
        Context::Shop,
        Context::Delivery,
        Context::Notification,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Context::Order => "order",
            Context::Payment => "payment",
            Context::Shop => "shop",
            Context::Delivery => "delivery",
            Context::Notification => "notification",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Context::ALL
            .into_iter()
            .find(|c| c.name() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown context `{s}` (expected order, payment, shop, delivery, notification)"
                )
            })
    }
}

/// Workflow id of an order: one workflow per order, derived from the business id.
pub fn workflow_id(order_id: &str) -> String {
    format!("order-{order_id}")
}

/// Search attributes kept current on every transition so operators can filter
/// orders in the Temporal Web UI.
pub mod search {
    use temporalio_common::search_attributes::SearchAttributeKey;
    pub const ORDER_STATUS: SearchAttributeKey<String> = SearchAttributeKey::keyword("OrderStatus");
    pub const SHOP_ID: SearchAttributeKey<String> = SearchAttributeKey::keyword("ShopId");
    pub const CUSTOMER_ID: SearchAttributeKey<String> = SearchAttributeKey::keyword("CustomerId");
    pub const RIDER_ID: SearchAttributeKey<String> = SearchAttributeKey::keyword("RiderId");
    /// `PENDING`, `REFUNDED` or `FAILED`; `RefundStatus="FAILED"` lists the
    /// orders an operator must settle by hand.
    pub const REFUND_STATUS: SearchAttributeKey<String> =
        SearchAttributeKey::keyword("RefundStatus");

    /// Every attribute above, for the scripts and tests that register them.
    pub const ALL_KEYWORDS: [&str; 5] = [
        "OrderStatus",
        "ShopId",
        "CustomerId",
        "RiderId",
        "RefundStatus",
    ];
}
