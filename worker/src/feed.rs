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
//!   own (`shop`, `delivery`, `notification`): it applies the changes that
//!   have arrived to its own store, in order and in one transaction, and then
//!   acknowledges them (one at a time if the store refuses one of them). A
//!   context that is down leaves its messages in the stream and catches up,
//!   in order, when it is back; the others are not delayed. A message not
//!   acknowledged in time is delivered again; applying one is idempotent
//!   (views keep only newer versions, notifications are keyed).
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
/// How long a consumer that got a change waits for more to apply with it in
/// one transaction. A change arrives about as the workflow records it, one at
/// a time; views that are this much later cost nobody anything.
const GATHER: Duration = Duration::from_millis(20);
/// How long the relay, woken by a change, lets more gather before it reads the
/// outbox: one round (a read, the publishes, a delete) for several rows.
const RELAY_GATHER: Duration = Duration::from_millis(10);
/// How long after a change is recorded the contexts' views usually hold it:
/// the relay's and a consumer's gathering. A reader waiting for a view to
/// catch up (the API's read-your-writes) looks no sooner.
pub const USUAL_LAG: Duration = RELAY_GATHER.saturating_add(GATHER);

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

    /// Whether the context's store takes `change` at all: most changes
    /// precede the rider, and the delivery view has nothing of them.
    fn takes(&self, change: &OrderChange) -> bool {
        !matches!(self, Follower::Delivery(_)) || delivery::in_view(&change.order)
    }

    /// Applies `changes`, in order, in one transaction of the context's store:
    /// all of them or none.
    async fn apply(&self, changes: &[OrderChange]) -> anyhow::Result<()> {
        let db = match self {
            Follower::Shop(db) | Follower::Delivery(db) | Follower::Notification { db, .. } => db,
        };
        let changes: Vec<&OrderChange> = changes.iter().filter(|c| self.takes(c)).collect();
        if changes.is_empty() {
            return Ok(());
        }
        let mut tx = db.begin().await?;
        let mut delivered = Vec::new();
        for change in changes {
            match self {
                Follower::Shop(_) => shop::apply_in(&mut tx, &change.order).await?,
                Follower::Delivery(_) => {
                    if delivery::apply_in(&mut tx, &change.order).await? {
                        delivered.push(&change.order);
                    }
                }
                Follower::Notification { webhook, .. } => {
                    notification::apply_in(&mut tx, *webhook, change).await?
                }
            }
        }
        tx.commit().await?;
        delivered.into_iter().for_each(delivery::delivered);
        Ok(())
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

    /// A connection of the relay's or a consumer's own. One shared by all the
    /// tasks of a process was tried: a connection and its wake-ups fewer, but
    /// the saga tests then failed now and then (2 runs in 8) and the
    /// cause was not found, while with one each they passed 11 runs in 11.
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
                    _ = recorded.notified() => {
                        tokio::select! {
                            _ = tokio::time::sleep(RELAY_GATHER) => {}
                            _ = stop.changed() => return Ok(()),
                        }
                    }
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
                // With it, those that arrive within `GATHER`: they are applied
                // in one transaction, so a stream of changes (and a backlog,
                // when a context that was away catches up) costs a commit per
                // round, not one each.
                let first = message.map_err(|e| anyhow::anyhow!("{e}"))?;
                let (messages, end) = gather(&mut batch, first, GATHER, &mut stop).await;
                self.handle(follower, messages, &stop).await?;
                match end {
                    Gathered::More => {}
                    Gathered::Expired => break,
                    Gathered::Stopped => return Ok(()),
                    Gathered::Failed(e) => return Err(e),
                }
            }
        }
    }

    /// Applies messages that arrived together and acknowledges them; a change
    /// the context could not apply is asked for again later. Stops between
    /// messages once `stop` is set: those left are delivered again after
    /// `ACK_WAIT`.
    async fn handle(
        &self,
        follower: &Follower,
        messages: Vec<jetstream::Message>,
        stop: &watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let name = follower.durable_name();
        let (mut readable, mut changes) = (Vec::new(), Vec::new());
        for message in messages {
            match self.open(&message.payload) {
                Ok(change) => {
                    readable.push(message);
                    changes.push(change);
                }
                Err(e) => {
                    // Sealed with another key, or not ours: it can never be
                    // applied here, and must not hold up the changes behind it.
                    tracing::error!(consumer = name, error = %format!("{e:#}"), "dropping an unreadable change");
                    self.metrics.feed_change(name, "dropped");
                    ack(&message, AckKind::Ack).await?;
                }
            }
        }
        if changes.len() > 1 {
            match follower.apply(&changes).await {
                Ok(()) => {
                    for message in &readable {
                        self.metrics.feed_change(name, "applied");
                        ack(message, AckKind::Ack).await?;
                    }
                    return Ok(());
                }
                // One of them may be the one the store refuses: one at a
                // time, the others still go through.
                Err(e) => {
                    tracing::debug!(consumer = name, error = %format!("{e:#}"), "applying changes together failed; one at a time");
                }
            }
        }
        for (message, change) in readable.iter().zip(&changes) {
            if *stop.borrow() {
                return Ok(());
            }
            match follower.apply(std::slice::from_ref(change)).await {
                Ok(()) => {
                    self.metrics.feed_change(name, "applied");
                    ack(message, AckKind::Ack).await?;
                }
                Err(e) => {
                    tracing::warn!(consumer = name, error = %format!("{e:#}"), "applying a change failed; it comes back");
                    self.metrics.feed_change(name, "retried");
                    ack(message, AckKind::Nak(Some(RETRY_AFTER))).await?;
                }
            }
        }
        Ok(())
    }
}

/// How [`gather`] ended.
enum Gathered {
    /// The wait or the count ran out: the pull may bring more.
    More,
    /// The pull request expired: a new one is needed.
    Expired,
    Stopped,
    Failed(anyhow::Error),
}

/// `first` and the messages of `batch` that arrive within `wait` after it, up
/// to `PULL_BATCH`.
async fn gather(
    batch: &mut pull::Batch,
    first: jetstream::Message,
    wait: Duration,
    stop: &mut watch::Receiver<bool>,
) -> (Vec<jetstream::Message>, Gathered) {
    let mut messages = vec![first];
    let gathered = tokio::time::sleep(wait);
    tokio::pin!(gathered);
    while messages.len() < PULL_BATCH {
        let next = tokio::select! {
            m = batch.next() => m,
            _ = &mut gathered => return (messages, Gathered::More),
            _ = stop.changed() => return (messages, Gathered::Stopped),
        };
        match next {
            Some(Ok(m)) => messages.push(m),
            Some(Err(e)) => return (messages, Gathered::Failed(anyhow::anyhow!("{e}"))),
            None => return (messages, Gathered::Expired),
        }
    }
    (messages, Gathered::More)
}

async fn ack(message: &jetstream::Message, kind: AckKind) -> anyhow::Result<()> {
    message
        .ack_with(kind)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
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
