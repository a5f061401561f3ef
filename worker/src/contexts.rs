//! What each context's worker runs: the registrations of its task queue and the
//! tasks that run beside it (the change feed's relay or consumer, the deadlines
//! the context keeps, the webhook relay). `run` starts the named ones.

use crate::{deadlines, ensure_reconciliation_schedule, feed};
use baedal_activities::config::Config;
use baedal_activities::{db, delivery, notification, order, payment, shop};
use baedal_workflows::{Context, OrderFulfillment, PaymentReconciliation};
use std::future::Future;
use std::sync::Arc;
use temporalio_client::Client;
use temporalio_sdk::WorkerOptions;
use temporalio_sdk::runtime::PollerBehavior;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What every context starts from.
pub(crate) struct Host<'a> {
    pub cfg: &'a Config,
    pub client: &'a Client,
    pub feed: &'a feed::Feed,
    /// Turns true at shutdown: the tasks beside the worker stop.
    pub stop: &'a watch::Receiver<bool>,
}

/// One context, ready to run.
pub(crate) struct Started {
    pub options: WorkerOptions,
    pub tasks: Vec<JoinHandle<()>>,
}

impl Host<'_> {
    pub async fn start(&self, context: Context) -> anyhow::Result<Started> {
        match context {
            Context::Order => self.order().await,
            Context::Payment => self.payment().await,
            Context::Shop => self.shop().await,
            Context::Delivery => self.delivery().await,
            Context::Notification => self.notification().await,
        }
    }

    /// The context's store, with a worker's share of SQLite connections.
    async fn open(&self, context: &str, migrator: &db::Migrator) -> anyhow::Result<db::Db> {
        db::open_with(&self.cfg.database, context, migrator, db::SQLITE_WORKER).await
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
        tokio::spawn(task)
    }

    /// The workflows, the customer's view (a local activity beside them) and
    /// the relay that publishes its outbox to the change feed.
    async fn order(&self) -> anyhow::Result<Started> {
        let cfg = self.cfg;
        let db = self.open("order", &order::MIGRATOR).await?;
        // The schedule is the operators' safety net, not the order path:
        // a server that will not take it now must not keep orders waiting.
        if let Err(e) = ensure_reconciliation_schedule(cfg, self.client).await {
            tracing::warn!(error = %format!("{e:#}"), "payment reconciliation not scheduled");
        }
        let recorded = Arc::new(tokio::sync::Notify::new());
        let relay = self
            .feed
            .clone()
            .relay(db.clone(), recorded.clone(), self.stop.clone());
        // Every order's first workflow task waits on the task queue itself,
        // which the SDK polls with one poller of five by default: concurrent
        // placements queue there. `WORKFLOW_TASK_POLLERS` splits more evenly.
        let pollers = (cfg.workflow_task_pollers > 0)
            .then(|| PollerBehavior::SimpleMaximum(cfg.workflow_task_pollers.max(2)));
        let ratio = if pollers.is_some() { 0.5 } else { 0.2 };
        let options = WorkerOptions::new(cfg.workflow_queue())
            .maybe_workflow_task_poller_behavior(pollers)
            .nonsticky_to_sticky_poll_ratio(ratio)
            .register_workflow::<OrderFulfillment>()?
            .register_workflow::<PaymentReconciliation>()?
            .register_activities(order::OrderContext {
                db: db.clone(),
                recorded: Some(recorded),
            })
            .register_activities(order::reconcile::OutcomeContext {
                db,
                temporal: self.client.clone(),
            })
            .build();
        Ok(Started {
            options,
            tasks: vec![self.spawn(relay)],
        })
    }

    async fn payment(&self) -> anyhow::Result<Started> {
        let cfg = self.cfg;
        let db = self.open("payment", &payment::MIGRATOR).await?;
        let breaker =
            payment::breaker::Breaker::new(db.clone(), cfg.breaker_failures, cfg.breaker_cooldown);
        let gateway = payment::Gateway::new(&cfg.payment_gateway_url, cfg.payment_timeout);
        let options = WorkerOptions::new(cfg.queues().payment)
            .register_activities(payment::PaymentContext {
                db,
                gateway,
                breaker,
            })
            .build();
        Ok(Started {
            options,
            tasks: Vec::new(),
        })
    }

    /// The owner's view follows the change feed; the acceptance deadline is kept here.
    async fn shop(&self) -> anyhow::Result<Started> {
        let cfg = self.cfg;
        let db = self.open("shop", &shop::MIGRATOR).await?;
        let tasks = vec![
            self.spawn(
                self.feed
                    .clone()
                    .follow(feed::Follower::Shop(db.clone()), self.stop.clone()),
            ),
            self.spawn(deadlines::shop_acceptance(
                db.clone(),
                self.client.clone(),
                cfg.shop_accept_timeout,
                self.stop.clone(),
            )),
        ];
        let options = WorkerOptions::new(cfg.queues().shop)
            .register_activities(shop::ShopContext { db })
            .build();
        Ok(Started { options, tasks })
    }

    /// Offers and the rider's view (from the change feed); offer expiry is kept here.
    async fn delivery(&self) -> anyhow::Result<Started> {
        let cfg = self.cfg;
        let db = self.open("delivery", &delivery::MIGRATOR).await?;
        if cfg.demo {
            delivery::seed_demo(&db, cfg.demo_riders).await?;
        }
        let placed = delivery::nearest::backfill_cells(&db).await?;
        if placed > 0 {
            tracing::info!(riders = placed, "riders placed in the nearest-rider index");
        }
        let tasks = vec![
            self.spawn(
                self.feed
                    .clone()
                    .follow(feed::Follower::Delivery(db.clone()), self.stop.clone()),
            ),
            self.spawn(deadlines::offer_expiry(
                db.clone(),
                self.client.clone(),
                self.stop.clone(),
            )),
        ];
        let options = WorkerOptions::new(cfg.queues().delivery)
            .register_activities(delivery::DeliveryContext {
                db,
                stale_after: cfg.rider_stale_after,
            })
            .build();
        Ok(Started { options, tasks })
    }

    /// Notifications from the change feed, and the webhook relay when one is set.
    async fn notification(&self) -> anyhow::Result<Started> {
        let cfg = self.cfg;
        let db = self.open("notification", &notification::MIGRATOR).await?;
        let mut tasks = vec![self.spawn(self.feed.clone().follow(
            feed::Follower::Notification {
                db: db.clone(),
                webhook: cfg.notify_webhook_url.is_some(),
            },
            self.stop.clone(),
        ))];
        if let Some(url) = cfg.notify_webhook_url.clone() {
            tasks.push(self.spawn(notification::run_relay(db.clone(), url, self.stop.clone())));
        }
        let options = WorkerOptions::new(cfg.queues().notification)
            .register_activities(notification::NotificationContext {
                db,
                webhook: cfg.notify_webhook_url.clone(),
            })
            .build();
        Ok(Started { options, tasks })
    }
}
