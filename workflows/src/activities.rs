//! Activity contracts, one block per context. The contexts' workers implement
//! them with `#[activity(definition = …)]`; the workflow calls only these.
//! (`#[activity_definitions]` requires declaration bodies to be exactly
//! `unimplemented!()`: they declare a contract, they are never run.)
#![allow(clippy::unused_unit)]

use crate::model::*;
use temporalio_macros::activity_definitions;
use temporalio_sdk::activities::ActivityError;

/// Order context: the customer's read model. Runs as a local activity on the
/// workflow's own worker, which is the order context's worker.
pub struct OrderActivities;

#[activity_definitions]
impl OrderActivities {
    #[activity(name = "order.project")]
    pub fn project(order: OrderSnapshot) -> Result<(), ActivityError> {
        unimplemented!()
    }

    /// The customer's view and the change's outbox row, in one transaction:
    /// the other contexts follow the outbox (the change feed) at their own pace.
    #[activity(name = "order.record")]
    pub fn record(change: OrderChange) -> Result<(), ActivityError> {
        unimplemented!()
    }

    /// For the payment reconciliation: whether each order is live, delivered
    /// or over without delivery (its workflow's state and the order's view).
    #[activity(name = "order.outcomes")]
    pub fn outcomes(order_ids: Vec<String>) -> Result<Vec<OrderOutcome>, ActivityError> {
        unimplemented!()
    }
}

pub struct PaymentActivities;

#[activity_definitions]
impl PaymentActivities {
    #[activity(name = "payment.charge")]
    pub fn charge(req: ChargeRequest) -> Result<ChargeOutcome, ActivityError> {
        unimplemented!()
    }

    /// Kept for orders placed before `refund_order` existed: retried until it succeeds.
    #[activity(name = "payment.refund")]
    pub fn refund(req: RefundRequest) -> Result<(), ActivityError> {
        unimplemented!()
    }

    /// Refunds once (by idempotency key). A gateway answer that can never
    /// succeed is `Refused`; transient failures fail the attempt (retried).
    #[activity(name = "payment.refund_order")]
    pub fn refund_order(req: RefundRequest) -> Result<RefundOutcome, ActivityError> {
        unimplemented!()
    }

    /// Approved charges with no refund, charged before the cut-off.
    #[activity(name = "payment.unsettled_charges")]
    pub fn unsettled_charges(q: UnsettledQuery) -> Result<Vec<UnsettledCharge>, ActivityError> {
        unimplemented!()
    }

    #[activity(name = "payment.settle_unknown")]
    pub fn settle_unknown(req: ChargeRequest) -> Result<SettleOutcome, ActivityError> {
        unimplemented!()
    }
}

/// Shop context: the owner's read model.
pub struct ShopActivities;

#[activity_definitions]
impl ShopActivities {
    #[activity(name = "shop.project")]
    pub fn project(order: OrderSnapshot) -> Result<(), ActivityError> {
        unimplemented!()
    }
}

/// Delivery context: offers, the atomic rider assignment and the rider's read model.
pub struct DeliveryActivities;

#[activity_definitions]
impl DeliveryActivities {
    #[activity(name = "delivery.offer_nearest")]
    pub fn offer_nearest(req: OfferRequest) -> Result<Option<OfferMade>, ActivityError> {
        unimplemented!()
    }

    #[activity(name = "delivery.withdraw_offer")]
    pub fn withdraw_offer(req: RiderOrder) -> Result<(), ActivityError> {
        unimplemented!()
    }

    #[activity(name = "delivery.assign")]
    pub fn assign(req: RiderOrder) -> Result<bool, ActivityError> {
        unimplemented!()
    }

    #[activity(name = "delivery.project")]
    pub fn project(order: OrderSnapshot) -> Result<(), ActivityError> {
        unimplemented!()
    }
}

pub struct NotificationActivities;

#[activity_definitions]
impl NotificationActivities {
    #[activity(name = "notification.announce")]
    pub fn announce(batch: Announcement) -> Result<(), ActivityError> {
        unimplemented!()
    }
}

/// Nameable handles of the contracts above, for the contexts' implementations
/// (`#[activity(definition = def::ShopProject)]`).
pub mod def {
    pub use super::delivery_activities::Assign as DeliveryAssign;
    pub use super::delivery_activities::OfferNearest as DeliveryOfferNearest;
    pub use super::delivery_activities::Project as DeliveryProject;
    pub use super::delivery_activities::WithdrawOffer as DeliveryWithdrawOffer;
    pub use super::notification_activities::Announce as NotificationAnnounce;
    pub use super::order_activities::Outcomes as OrderOutcomes;
    pub use super::order_activities::Project as OrderProject;
    pub use super::order_activities::Record as OrderRecord;
    pub use super::payment_activities::Charge as PaymentCharge;
    pub use super::payment_activities::Refund as PaymentRefund;
    pub use super::payment_activities::RefundOrder as PaymentRefundOrder;
    pub use super::payment_activities::SettleUnknown as PaymentSettleUnknown;
    pub use super::payment_activities::UnsettledCharges as PaymentUnsettledCharges;
    pub use super::shop_activities::Project as ShopProject;
}
