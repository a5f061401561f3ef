//! The change feed: how an order's recorded changes reach the shop, delivery and
//! notification contexts without costing the order's Temporal history anything.
//!
//! - The order workflow records each new state once, through the order
//!   context's local activity `order.record`: the customer's view and an outbox
//!   row of the change, in one transaction (`order_changes`).
//! - The relay, in every order worker, publishes outbox rows to a NATS
//!   JetStream stream (one per deployment, see `Config::feed_stream`) and
//!   deletes them once the stream has acknowledged them. Each message carries
//!   `Nats-Msg-Id: <order id>:<version>`, so a row published twice (a relay
//!   that crashed before deleting it, or two order workers) is stored once.
//! - Each context's worker follows the stream with a durable consumer of its
//!   own (`shop`, `delivery`, `notification`): it applies a change to its own
//!   store and then acknowledges it. A context that is down leaves its
//!   messages in the stream and catches up, in order, when it is back; the
//!   others are not delayed. A message not acknowledged in time is delivered
//!   again; applying one is idempotent (views keep only newer versions,
//!   notifications are keyed).
//!
//! Messages are sealed with the payload key, as every Temporal payload is:
//! a change holds the customer's phone number and address.

use crate::codec::{PayloadCipher, SEALED};
use crate::metrics::Metrics;
use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind, consumer::pull, message::PublishMessage, stream};
use baedal_activities::config::Config;
use baedal_activities::db::Db;
use baedal_activities::order::outbox;
use baedal_activities::{delivery, notification, shop};
use baedal_workflows::OrderChange;
use futures::StreamExt;
use prost::Message as _;
use std::sync::Arc;
use std::time::Duration;
use temporalio_common::protos::temporal::api::common::v1::Payload;
use tokio::sync::{Notify, watch};

/// How long the stream keeps a change: long enough for a context that was down
/// over a weekend to catch up.
const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// A consumer that took a message and did not acknowledge it (it crashed, or
/// was stopped) gets it again after this long.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// A change the context could not apply (its store is down) comes back after this.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Outbox rows published per round.
const RELAY_BATCH: i64 = 256;
/// How long one pull request of a consumer waits for messages. Each request
/// is short and the next follows at once: a request the server or the client
/// lost (a slow or reconnecting connection) costs at most this long, instead of
/// a long-lived subscription that stalls without an error.
const PULL_WAIT: Duration = Duration::from_secs(2);
/// Messages one pull request asks for.
const PULL_BATCH: usize = 64;

/// Which context a consumer applies changes for.
#[derive(Clone)]
pub enum Follower {
    Shop(Db),
    Delivery(Db),
    Notification { db: Db, webhook: bool },
}

impl Follower {
    fn durable_name(&self) -> &'static str {
        match self {
            Follower::Shop(_) => "shop",
            Follower::Delivery(_) => "delivery",
            Follower::Notification { .. } => "notification",
        }
    }

    async fn apply(&self, change: &OrderChange) -> anyhow::Result<()> {
        match self {
            Follower::Shop(db) => shop::apply(db, &change.order).await,
            Follower::Delivery(db) => delivery::apply(db, &change.order).await,
            Follower::Notification { db, webhook } => {
                notification::apply(db, *webhook, change).await
            }
        }
    }
}

/// The broker's stream of this deployment, and the key that seals its messages.
#[derive(Clone)]
pub struct Feed {
    url: String,
    stream: String,
    subject: String,
    cipher: Arc<PayloadCipher>,
    metrics: Arc<Metrics>,
}

impl Feed {
    pub fn new(cfg: &Config, cipher: Arc<PayloadCipher>, metrics: Arc<Metrics>) -> Self {
        let (stream, subject) = cfg.feed_stream();
        Feed {
            url: cfg.nats_url.clone(),
            stream,
            subject,
            cipher,
            metrics,
        }
    }

    async fn connect(&self) -> anyhow::Result<(jetstream::Context, stream::Stream)> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("baedal@{}", std::process::id()))
            .connection_timeout(Duration::from_secs(5))
            .connect(&self.url)
            .await
            .with_context(|| format!("connecting to NATS at {}", self.url))?;
        let js = jetstream::new(client);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: self.stream.clone(),
                subjects: vec![self.subject.clone()],
                max_age: RETENTION,
                duplicate_window: Duration::from_secs(120),
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .with_context(|| format!("opening the JetStream stream {}", self.stream))?;
        Ok((js, stream))
    }

    fn seal(&self, change_json: &str) -> anyhow::Result<Vec<u8>> {
        let plain = Payload {
            metadata: [("encoding".to_string(), b"json/plain".to_vec())]
                .into_iter()
                .collect(),
            data: change_json.as_bytes().to_vec(),
            ..Default::default()
        };
        Ok(self.cipher.seal(&plain)?.encode_to_vec())
    }

    fn open(&self, bytes: &[u8]) -> anyhow::Result<OrderChange> {
        let sealed = Payload::decode(bytes)?;
        anyhow::ensure!(
            sealed.metadata.get("encoding").map(Vec::as_slice) == Some(SEALED),
            "a change that is not sealed"
        );
        let plain = self.cipher.open(sealed)?;
        Ok(serde_json::from_slice(&plain.data)?)
    }

    /// Publishes the order context's outbox until `stop`; woken by `recorded`
    /// after each change, and every second for rows an earlier round left.
    pub async fn relay(self, db: Db, recorded: Arc<Notify>, stop: watch::Receiver<bool>) {
        let mut pause = Pause::new();
        loop {
            match self
                .relay_until(&db, &recorded, &mut pause, stop.clone())
                .await
            {
                Ok(()) => return,
                Err(e) => interrupted("relay", &e),
            }
            if pause.wait(stop.clone()).await {
                return;
            }
        }
    }

    async fn relay_until(
        &self,
        db: &Db,
        recorded: &Notify,
        pause: &mut Pause,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let (js, _) = self.connect().await?;
        *pause = Pause::new();
        tracing::info!(stream = %self.stream, "change feed: relaying the outbox");
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let batch = outbox::oldest(db, RELAY_BATCH).await?;
            let full = batch.len() as i64 == RELAY_BATCH;
            if !batch.is_empty() {
                self.publish(&js, db, &batch).await?;
            }
            // A short batch was everything there was: wait for the next change
            // (a change recorded meanwhile has left its wake-up) instead of
            // reading the outbox again to find it empty.
            if !full {
                tokio::select! {
                    _ = recorded.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return Ok(()),
                }
            }
        }
    }

    /// Hands `batch` to the broker and, once it has stored every one, clears it from the outbox.
    async fn publish(
        &self,
        js: &jetstream::Context,
        db: &Db,
        batch: &[outbox::Pending],
    ) -> anyhow::Result<()> {
        let mut acks = Vec::with_capacity(batch.len());
        for p in batch {
            let message = PublishMessage::build()
                .payload(self.seal(&p.change)?.into())
                .message_id(p.message_id());
            acks.push(js.send_publish(self.subject.clone(), message).await?);
        }
        for ack in acks {
            ack.await?;
        }
        outbox::published(db, batch).await
    }

    /// Applies the stream's changes to one context's store, in order, until `stop`.
    pub async fn follow(self, follower: Follower, stop: watch::Receiver<bool>) {
        let mut pause = Pause::new();
        loop {
            match self.follow_until(&follower, &mut pause, stop.clone()).await {
                Ok(()) => return,
                Err(e) => interrupted(follower.durable_name(), &e),
            }
            if pause.wait(stop.clone()).await {
                return;
            }
        }
    }

    async fn follow_until(
        &self,
        follower: &Follower,
        pause: &mut Pause,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let name = follower.durable_name();
        let (_, stream) = self.connect().await?;
        let consumer = stream
            .get_or_create_consumer(
                name,
                pull::Config {
                    durable_name: Some(name.to_string()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("opening the {name} consumer"))?;
        *pause = Pause::new();
        tracing::info!(consumer = name, "change feed: following");
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let mut batch = consumer
                .batch()
                .max_messages(PULL_BATCH)
                .expires(PULL_WAIT)
                .messages()
                .await
                .map_err(|e| anyhow::anyhow!("pulling from the {name} consumer: {e}"))?;
            loop {
                let message = tokio::select! {
                    m = batch.next() => m,
                    _ = stop.changed() => return Ok(()),
                };
                let Some(message) = message else {
                    break;
                };
                let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
                self.handle(follower, message).await?;
            }
        }
    }

    /// Applies one message and acknowledges it, or asks for it again later.
    async fn handle(&self, follower: &Follower, message: jetstream::Message) -> anyhow::Result<()> {
        let name = follower.durable_name();
        let applied = match self.open(&message.payload) {
            Ok(change) => follower.apply(&change).await.map(|()| "applied"),
            Err(e) => {
                // Sealed with another key, or not ours: it can never be
                // applied here, and must not hold up the changes behind it.
                tracing::error!(consumer = name, error = %format!("{e:#}"), "dropping an unreadable change");
                Ok("dropped")
            }
        };
        let outcome = *applied.as_ref().unwrap_or(&"retried");
        self.metrics.feed_change(name, outcome);
        match applied {
            Ok(_) => message.ack().await.map_err(|e| anyhow::anyhow!("{e}")),
            Err(e) => {
                tracing::warn!(consumer = name, error = %format!("{e:#}"), "applying a change failed; it comes back");
                message
                    .ack_with(AckKind::Nak(Some(RETRY_AFTER)))
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))
            }
        }
    }
}

fn interrupted(what: &str, e: &anyhow::Error) {
    tracing::warn!(feed = what, error = %format!("{e:#}"), "change feed interrupted; retrying");
}

/// The wait between attempts when the broker or the store is down: doubling
/// from 200 ms up to 5 s.
struct Pause(Duration);

impl Pause {
    fn new() -> Self {
        Pause(Duration::from_millis(200))
    }

    /// Waits; true when asked to stop meanwhile.
    async fn wait(&mut self, mut stop: watch::Receiver<bool>) -> bool {
        if *stop.borrow() {
            return true;
        }
        let stopped = tokio::select! {
            _ = tokio::time::sleep(self.0) => false,
            _ = stop.changed() => true,
        };
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        stopped
    }
}
