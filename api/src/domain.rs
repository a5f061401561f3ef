//! Domain values that parse, not validate: once one exists it is valid.

use crate::error::ApiError;
use crate::orders::PlaceBody;
use baedal_activities::Config;
use baedal_activities::shop::{MenuItem, Shop};
use baedal_workflows::{Address, LineItem, OrderRequest, ShopRef};
use std::collections::HashSet;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

impl LatLon {
    pub fn parse(lat: f64, lon: f64) -> Result<Self, ApiError> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(ApiError::unprocessable("lat must be between -90 and 90"));
        }
        if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
            return Err(ApiError::unprocessable("lon must be between -180 and 180"));
        }
        Ok(LatLon { lat, lon })
    }
}

/// How many of one menu item: 1..=99.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(u32);

impl Quantity {
    pub fn parse(q: i64) -> Result<Self, ApiError> {
        if (1..=99).contains(&q) {
            Ok(Quantity(q as u32))
        } else {
            Err(ApiError::unprocessable(format!(
                "quantity must be between 1 and 99, got {q}"
            )))
        }
    }
    pub fn get(self) -> u32 {
        self.0
    }
}

/// Cooking time in minutes: 1..=180.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookMinutes(u32);

impl CookMinutes {
    pub fn parse(m: i64) -> Result<Self, ApiError> {
        if (1..=180).contains(&m) {
            Ok(CookMinutes(m as u32))
        } else {
            Err(ApiError::unprocessable(
                "cookMinutes must be between 1 and 180",
            ))
        }
    }
    pub fn get(self) -> u32 {
        self.0
    }
}

/// Whether `c` may appear in text a client sends: ordinary printable characters
/// only. Refused: every control character (C0 including NUL, tab and newline,
/// DEL, C1), the Unicode line and paragraph separators, and the bidi controls
/// that make text display in another order than it is stored (U+061C,
/// U+200E/U+200F, U+202A..=U+202E, U+2066..=U+2069).
fn printable(c: char) -> bool {
    !(c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{2066}'..='\u{2069}'
        ))
}

/// The first character of `value` that is not ordinary printable text, if any.
pub fn unprintable(value: &str) -> Option<char> {
    value.chars().find(|&c| !printable(c))
}

/// A non-empty, bounded, single line of printable text (address, reason,
/// token); see [`unprintable`] for what is refused. Surrounding spaces are
/// trimmed.
pub fn text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    if let Some(c) = unprintable(value) {
        return Err(ApiError::unprocessable(format!(
            "{field} must be one line of printable text; it contains U+{:04X}",
            u32::from(c)
        )));
    }
    let v = value.trim();
    if v.is_empty() {
        return Err(ApiError::unprocessable(format!(
            "{field} must not be empty"
        )));
    }
    if v.chars().count() > max {
        return Err(ApiError::unprocessable(format!(
            "{field} is longer than {max} characters"
        )));
    }
    Ok(v.to_string())
}

/// The id of an order or a shop as a request path names it. An id that is
/// empty, longer than [`Id::MAX_CHARS`] or not printable text cannot name
/// anything stored, so it is answered as one that does not exist (404) before
/// any store is asked (Postgres refuses NUL in text outright).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Id(String);

impl Id {
    pub const MAX_CHARS: usize = 200;

    /// `what` names the thing in the 404 ("order", "shop", ...).
    pub fn parse(what: &str, raw: String) -> Result<Self, ApiError> {
        if Self::possible(&raw) {
            Ok(Id(raw))
        } else {
            Err(ApiError::not_found(what))
        }
    }

    /// Whether some stored record could have this id.
    pub fn possible(raw: &str) -> bool {
        !raw.is_empty() && raw.chars().count() <= Self::MAX_CHARS && unprintable(raw).is_none()
    }
}

impl std::ops::Deref for Id {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A phone number: digits with optional +, spaces and dashes, 7..=20 characters.
pub fn phone(value: &str) -> Result<String, ApiError> {
    let v = value.trim();
    let digits = v.chars().filter(char::is_ascii_digit).count();
    let ok = (7..=20).contains(&v.len())
        && digits >= 7
        && v.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | ' '));
    if ok {
        Ok(v.to_string())
    } else {
        Err(ApiError::unprocessable(
            "phone must be a phone number like 010-1234-5678",
        ))
    }
}

/// An order that parsed: a known shop, distinct items of its own menu priced
/// from that menu, an address on Earth, a phone number and a payment token.
#[derive(Debug, Clone)]
pub struct PlaceOrder {
    shop: Shop,
    items: Vec<LineItem>,
    total: i64,
    address: Address,
    phone: String,
    payment_token: String,
    body_hash: String,
}

impl PlaceOrder {
    /// The card paid with (its gateway token), which the decline limit counts.
    pub fn card(&self) -> &str {
        &self.payment_token
    }

    /// At most this many different items per order.
    pub const MAX_ITEMS: usize = 50;

    pub fn parse(body: &PlaceBody, shop: Shop, menu: &[MenuItem]) -> Result<Self, ApiError> {
        if body.items.is_empty() {
            return Err(ApiError::unprocessable("an order needs at least one item"));
        }
        if body.items.len() > Self::MAX_ITEMS {
            return Err(ApiError::unprocessable(format!(
                "at most {} different items per order",
                Self::MAX_ITEMS
            )));
        }
        let mut seen = HashSet::new();
        let mut items = Vec::with_capacity(body.items.len());
        for it in &body.items {
            let q = Quantity::parse(it.quantity)?;
            if !Id::possible(&it.menu_id) {
                return Err(ApiError::unprocessable(format!(
                    "a menu item id is not on {}'s menu",
                    shop.id
                )));
            }
            let m = menu.iter().find(|m| m.id == it.menu_id).ok_or_else(|| {
                ApiError::unprocessable(format!(
                    "menu item {} is not on {}'s menu",
                    it.menu_id, shop.id
                ))
            })?;
            if !seen.insert(&it.menu_id) {
                return Err(ApiError::unprocessable(format!(
                    "menu item {} is listed twice",
                    it.menu_id
                )));
            }
            items.push(LineItem {
                menu_id: m.id.clone(),
                name: m.name.clone(),
                price: m.price,
                quantity: q.get(),
            });
        }
        let total = items.iter().map(|i| i.price * i64::from(i.quantity)).sum();
        let at = LatLon::parse(body.address.lat, body.address.lon)?;
        let address = Address {
            text: text("address.text", &body.address.text, 500)?,
            lat: at.lat,
            lon: at.lon,
        };
        // What an Idempotency-Key is checked against: the body as the client sent it.
        let canonical = serde_json::to_vec(body).map_err(anyhow::Error::from)?;
        let body_hash = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &canonical)
            .simple()
            .to_string();
        Ok(PlaceOrder {
            items,
            total,
            address,
            phone: phone(&body.phone)?,
            payment_token: text("paymentToken", &body.payment_token, 200)?,
            body_hash,
            shop,
        })
    }

    /// Tells a retry of this order (same hash) from another order reusing its key.
    pub fn body_hash(&self) -> &str {
        &self.body_hash
    }

    /// What the order's workflow starts from.
    pub fn request(&self, order_id: &str, customer_id: &str, cfg: &Config) -> OrderRequest {
        OrderRequest {
            order_id: order_id.to_string(),
            customer_id: customer_id.to_string(),
            owner_id: self.shop.owner_id.clone(),
            shop: ShopRef {
                id: self.shop.id.clone(),
                name: self.shop.name.clone(),
                lat: self.shop.lat,
                lon: self.shop.lon,
            },
            items: self.items.clone(),
            total: self.total,
            address: self.address.clone(),
            phone: self.phone.clone(),
            payment_token: self.payment_token.clone(),
            timeouts: cfg.timeouts(),
            queues: cfg.queues(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_must_be_positive_and_bounded() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(-1).is_err());
        assert!(Quantity::parse(100).is_err());
        assert_eq!(Quantity::parse(3).unwrap().get(), 3);
    }

    #[test]
    fn coordinates_must_be_on_earth() {
        assert!(LatLon::parse(91.0, 0.0).is_err());
        assert!(LatLon::parse(0.0, -180.5).is_err());
        assert!(LatLon::parse(f64::NAN, 0.0).is_err());
        assert!(LatLon::parse(37.5, 127.0).is_ok());
    }

    #[test]
    fn cook_minutes_are_one_to_one_eighty() {
        assert!(CookMinutes::parse(0).is_err());
        assert!(CookMinutes::parse(181).is_err());
        assert_eq!(CookMinutes::parse(180).unwrap().get(), 180);
    }

    #[test]
    fn phones_and_texts() {
        assert!(phone("010-1234-5678").is_ok());
        assert!(phone("call me").is_err());
        assert!(text("address", "  ", 10).is_err());
        assert!(text("address", "abcdefghijk", 10).is_err());
        assert_eq!(text("address", " 서울 1 ", 10).unwrap(), "서울 1");
    }

    #[test]
    fn texts_are_one_line_of_printable_characters() {
        let refused = [
            "a\0b",         // NUL
            "a\u{1b}[31mb", // ESC (a terminal escape)
            "a\u{7f}b",     // DEL
            "a\u{85}b",     // C1 (next line)
            "a\u{9b}b",     // C1 (CSI)
            "a\nb",         // one line only
            "a\rb",
            "a\tb",
            "line\n",     // even where trimming would drop it
            "a\u{2028}b", // line separator
            "a\u{2029}b", // paragraph separator
            "a\u{061C}b", // Arabic letter mark
            "a\u{200E}b", // LRM
            "a\u{200F}b", // RLM
            "a\u{202A}b", // LRE
            "a\u{202E}b", // RLO
            "a\u{2066}b", // LRI
            "a\u{2069}b", // PDI
        ];
        for v in refused {
            let e = text("reason", v, 100).unwrap_err();
            assert!(
                matches!(&e, ApiError::Unprocessable(m) if m.contains("U+")),
                "{v:?}: {e:?}"
            );
        }
        for v in [
            "Sold out",
            "서울시 강남구 테헤란로 1, 2층 (정문)",
            "Café & Crêpes – «été»",
            "شارع الملك فهد",
            "tok_ok",
            "👩‍🍳 kitchen closed",
        ] {
            assert_eq!(text("reason", v, 100).unwrap(), v);
        }
    }

    #[test]
    fn path_ids_that_cannot_exist_are_not_found() {
        for raw in [
            String::new(),
            "order\0".to_string(),
            "\u{1b}x".to_string(),
            "a\u{202E}b".to_string(),
            "a\nb".to_string(),
            "x".repeat(Id::MAX_CHARS + 1),
        ] {
            let e = Id::parse("order", raw.clone()).unwrap_err();
            assert!(matches!(e, ApiError::NotFound(_)), "{raw:?}: {e:?}");
        }
        let id = Id::parse("order", "3f2a9c".into()).unwrap();
        assert_eq!(&*id, "3f2a9c");
        assert!(Id::parse("shop", "x".repeat(Id::MAX_CHARS)).is_ok());
    }
}
