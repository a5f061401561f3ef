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

/// The order number people read aloud (`B7K-42Q`): the first 30 bits of the
/// order id in Crockford's base 32 (no I, L, O or U to misread). A handle beside
/// the id, not a key: two orders may share one. The web pages compute the same
/// (`orderNo` in api/web/app.js).
pub fn order_no(order_id: &str) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let head = order_id
        .get(..8)
        .and_then(|h| u32::from_str_radix(h, 16).ok());
    let bits = head.unwrap_or_else(|| {
        // Not a hex id: its FNV-1a hash instead.
        order_id.bytes().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        })
    }) >> 2;
    let chars: Vec<char> = (0..6)
        .map(|i| ALPHABET[((bits >> (25 - 5 * i)) & 31) as usize] as char)
        .collect();
    format!(
        "{}-{}",
        chars[..3].iter().collect::<String>(),
        chars[3..].iter().collect::<String>()
    )
}

#[cfg(test)]
mod order_no_tests {
    use super::order_no;

    #[test]
    fn an_order_number_is_six_readable_characters_from_the_id() {
        assert_eq!(order_no("00000000aaaa"), "000-000");
        assert_eq!(order_no("ffffffffaaaa"), "ZZZ-ZZZ");
        // 0x1234abcd >> 2 = 0x048d2af3: 00010 01000 11010 01010 10111 10011
        assert_eq!(order_no("1234abcd9f0e4c5aa1b2c3d4e5f60718"), "28T-AQK");
        let n = order_no("not-hex-at-all");
        assert_eq!(n.len(), 7);
        assert!(
            n.chars()
                .all(|c| c == '-' || "0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(c))
        );
    }
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
