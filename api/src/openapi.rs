//! The OpenAPI 3.1 description of the HTTP contract (SPEC section 3) and its
//! viewer. The document is generated from the same `#[utoipa::path]`
//! declarations that `crate::api_routes` registers with the router, so the
//! served routes and the documented ones cannot drift apart.
//!
//! Read models are built as JSON in the activities crate; the schemas below
//! mirror that JSON (`order_info`, `order_dtl`, `delivery_info`, `offers_for`,
//! `feed`) and the tests check them against it.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use std::sync::LazyLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::{Config, SwaggerUi};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/openapi.json";
/// Where the interactive viewer is served (Swagger UI, assets embedded in the binary).
pub const DOCS_PATH: &str = "/api/docs";
/// The name of the bearer-token security scheme.
pub const BEARER: &str = "bearerAuth";
/// The media type of every refusal.
pub const PROBLEM_JSON: &str = "application/problem+json";

const DESCRIPTION: &str = "\
The HTTP gateway of baedal, a food-delivery platform: customers order and pay, shop owners \
accept or reject, riders take offers and deliver. Every order is one durable workflow; reads \
come from each role's read model and never wait on it.

**Auth.** `POST /api/auth/login` with `{\"username\",\"password\"}` answers `{token, role, id}` \
(owners also get `shopId`). Send the token as `Authorization: Bearer <token>` on every call \
except `GET /api/shops`, `GET /api/shops/{shopId}/menu`, `GET /api/health` and the login \
itself. A missing, malformed or expired token is `401`; a call made with another role's token \
is `403`; another tenant's order, shop or delivery is `404` (never its data). Demo accounts \
(password `demo`): `customer1`, `customer2`, `owner1`, `owner2`, `rider1`…`rider6`.

**Errors.** Every refusal is `application/problem+json` (RFC 9457): \
`{type, title, status, detail}`, where `type` is `https://baedal.dev/problems/<slug>`. \
Malformed JSON is `400`, a body of the wrong shape or with unknown fields `422`, a body over \
64 KiB `413`, a body that is not `application/json` `415`. An action the order's current state \
does not allow is `409`. Placing an order answers `402` when the payment is declined and `503` \
with `Retry-After` while the payment gateway is failing, slow or its circuit breaker is open; \
nothing is charged in either case. Internal failures are `500`, with the cause logged, not sent.

**Retries.** Placing an order and every action on one take an optional `Idempotency-Key` \
header (1..200 visible ASCII characters; a malformed one is `400`). A repeat with the same key \
answers the first answer: the same order, charged once; the same action's status and body, even \
after the order has finished. The same key for another order, action or body is `422`.

All amounts are integer KRW; all times are RFC 3339 UTC.";

#[derive(OpenApi)]
#[openapi(
    info(title = "baedal API"),
    modifiers(&BearerAuth),
    tags(
        (name = "public", description = "No token needed: shops, menus, health and this document."),
        (name = "auth", description = "Log in for a bearer token."),
        (name = "customer", description = "Place, follow and cancel orders (customer token)."),
        (name = "owner", description = "The shop's orders: accept, reject, mark ready (owner token)."),
        (name = "rider", description = "Location, offers and deliveries (rider token)."),
        (name = "operator", description = "Operational views: breaker metrics, the workflow's live state."),
    ),
    components(
        schemas(
            Problem, OrderStatus, OrderInfo, OrderDtl, DeliveryInfo, Offer, Notification, Shop,
            MenuItem, LoginResponse, StreamTicket, crate::codec::CodecPayloads,
            crate::codec::CodecPayload, ActionResult, LineItem, Address, Rider, Refund, RefundStatus,
            HistoryEntry, Health, Metrics, BreakerMetrics, RefundMetrics,
        ),
        responses(
            BadRequest, Unauthorized, PaymentDeclined, Forbidden, NotFound, Conflict, PayloadTooLarge,
            UnsupportedMediaType, Unprocessable, PaymentUnavailable, Unavailable, TooManyRequests,
            Internal,
        ),
    ),
)]
pub struct ApiDoc;

/// Adds the `bearerAuth` scheme (HTTP bearer, JWT) that protected operations name.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "The `token` from `POST /api/auth/login` (HS256 JWT, expires).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The complete document, as served: every route of `crate::api_routes`.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = crate::api_routes().into_openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.info.description = Some(DESCRIPTION.to_string());
    doc
}

static DOCUMENT_JSON: LazyLock<String> = LazyLock::new(|| {
    document()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
});

/// This OpenAPI document
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "public",
    operation_id = "openapi",
    description = "The OpenAPI 3.1 description of this API, generated from the router's own route \
                   declarations. An interactive viewer is at `/api/docs`.",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object, content_type = "application/json")),
)]
pub async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT_JSON.as_str(),
    )
}

/// The interactive viewer at `/api/docs` (Swagger UI). Its assets are compiled
/// into the binary (`utoipa-swagger-ui`'s `vendored` feature), so the page needs
/// no network beyond this server; the online spec validator is switched off.
pub fn docs_ui<S: Clone + Send + Sync + 'static>() -> Router<S> {
    SwaggerUi::new(DOCS_PATH)
        .config(
            Config::new([OPENAPI_PATH])
                .validator_url("none")
                .try_it_out_enabled(true)
                .persist_authorization(true)
                .display_request_duration(true)
                .display_operation_id(true),
        )
        .into()
}

// ---------------------------------------------------------------------------
// Errors

/// A refusal (RFC 9457 problem details); every error answer has this body,
/// served as `application/problem+json`.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// `https://baedal.dev/problems/<slug>`; the slug names the kind of refusal.
    #[serde(rename = "type")]
    #[schema(format = "uri", example = "https://baedal.dev/problems/conflict")]
    pub kind: String,
    /// A short, fixed summary of the kind of refusal.
    #[schema(example = "Not allowed in the order's current state")]
    pub title: String,
    /// The HTTP status code.
    #[schema(example = 409)]
    pub status: u16,
    /// What exactly was refused and why.
    #[schema(example = "the order was already accepted")]
    pub detail: String,
}

/// Shared error responses: `(status = 404, response = NotFound)` in a path
/// refers to `#/components/responses/NotFound`, a `Problem` body.
macro_rules! problem_responses {
    ($($name:ident => $description:literal $(, header $hname:literal : $hdesc:literal)?;)*) => {$(
        #[doc = $description]
        pub struct $name;

        impl<'r> utoipa::ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
                #[allow(unused_mut)]
                let mut response = ResponseBuilder::new().description($description).content(
                    PROBLEM_JSON,
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
                );
                $(
                    response = response.header(
                        $hname,
                        utoipa::openapi::HeaderBuilder::new()
                            .schema(utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::String))
                            .description(Some($hdesc))
                            .build(),
                    );
                )?
                (stringify!($name), response.build().into())
            }
        }
    )*};
}

problem_responses! {
    BadRequest => "Malformed request: the body is not JSON, or a header is invalid.";
    Unauthorized => "Missing, malformed or expired bearer token (or wrong username/password at login).",
        header "WWW-Authenticate": "`Bearer`";
    PaymentDeclined => "The payment was declined; nothing was charged and no order exists.";
    Forbidden => "The token's role may not make this call.";
    NotFound => "No such resource for the caller (another tenant's looks the same as none).";
    Conflict => "Not allowed in the order's current state (e.g. already accepted, offer expired or taken).";
    PayloadTooLarge => "The body is over 64 KiB.";
    TooManyRequests => "Too many failed tries of this kind for now (wrong passwords for this account \
        or from this address; declined payments of this card); nothing was done, try again after \
        `Retry-After` seconds.",
        header "Retry-After": "Seconds to wait before trying again.";
    UnsupportedMediaType => "The body is not sent as `Content-Type: application/json`.";
    Unprocessable => "The body has the wrong shape, unknown fields or values out of range; or the \
        `Idempotency-Key` was already used for another order, action or body.";
    PaymentUnavailable => "The payment gateway is failing or slow, or its circuit breaker is open; \
        nothing was charged, pay again after `Retry-After` seconds.",
        header "Retry-After": "Seconds to wait before paying again.";
    Unavailable => "The workflow service is unreachable for now; nothing was changed, try again \
        after `Retry-After` seconds.",
        header "Retry-After": "Seconds to wait before trying again.";
    Internal => "Something failed on the server's side; the cause is logged, not sent.";
}

/// The refusals of a JSON request body: malformed (400), over 64 KiB (413), not
/// JSON (415), the wrong shape or values (422).
pub struct BodyRefusals;

impl utoipa::IntoResponses for BodyRefusals {
    fn responses() -> std::collections::BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        refusals(&[
            ("400", "BadRequest"),
            ("413", "PayloadTooLarge"),
            ("415", "UnsupportedMediaType"),
            ("422", "Unprocessable"),
        ])
    }
}

fn refusals(
    list: &[(&str, &str)],
) -> std::collections::BTreeMap<String, RefOr<utoipa::openapi::Response>> {
    list.iter()
        .map(|(code, name)| (code.to_string(), Ref::from_response_name(*name).into()))
        .collect()
}

/// The refusals every action on an order shares (cancel, accept, reject, ready,
/// the rider's offer and delivery steps): 400 (a bad `Idempotency-Key`), 401,
/// 403, 404, 409, 422 (the key used for another request), 503, 500, each a
/// reference to the shared problem response above.
pub struct ActionRefusals;

impl utoipa::IntoResponses for ActionRefusals {
    fn responses() -> std::collections::BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        refusals(&[
            ("400", "BadRequest"),
            ("401", "Unauthorized"),
            ("403", "Forbidden"),
            ("404", "NotFound"),
            ("409", "Conflict"),
            ("422", "Unprocessable"),
            ("500", "Internal"),
            ("503", "Unavailable"),
        ])
    }
}

// ---------------------------------------------------------------------------
// Read models and answers (mirrors of the JSON the activities crate builds)

/// The order's status (SPEC section 2). Its values are listed from the
/// workflow's own status enum, so the document cannot drift from the wire.
#[derive(Serialize)]
pub struct OrderStatus(pub baedal_workflows::OrderStatus);

impl utoipa::PartialSchema for OrderStatus {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .description(Some("The order's status (SPEC section 2)."))
            .enum_values(Some(
                baedal_workflows::OrderStatus::ALL.map(baedal_workflows::OrderStatus::as_str),
            ))
            .into()
    }
}

impl ToSchema for OrderStatus {
    fn name() -> std::borrow::Cow<'static, str> {
        "OrderStatus".into()
    }
}

/// A priced line of an order; prices come from the shop's menu.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    pub menu_id: String,
    pub name: String,
    /// Unit price, KRW.
    pub price: i64,
    #[schema(minimum = 1, maximum = 99)]
    pub quantity: u32,
}

/// Where the order goes.
#[derive(Serialize, ToSchema)]
pub struct Address {
    pub text: String,
    #[schema(minimum = -90, maximum = 90)]
    pub lat: f64,
    #[schema(minimum = -180, maximum = 180)]
    pub lon: f64,
}

/// The rider assigned to (or offered) the order.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rider {
    pub id: String,
    /// Great-circle distance from the rider to the shop when offered, metres.
    pub distance_m: i64,
}

/// Where a refund stands. Listed from the workflow's own enum, like [`OrderStatus`].
#[derive(Serialize)]
pub struct RefundStatus(pub baedal_workflows::RefundStatus);

impl utoipa::PartialSchema for RefundStatus {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .description(Some(
                "`PENDING` until the gateway refunds, then `REFUNDED`; `FAILED` when the gateway \
                 refused the refund for good and an operator must act.",
            ))
            .enum_values(Some(
                baedal_workflows::RefundStatus::ALL.map(baedal_workflows::RefundStatus::as_str),
            ))
            .into()
    }
}

impl ToSchema for RefundStatus {
    fn name() -> std::borrow::Cow<'static, str> {
        "RefundStatus".into()
    }
}

/// The refund of a rejected or cancelled order.
#[derive(Serialize, ToSchema)]
pub struct Refund {
    /// KRW.
    pub amount: i64,
    pub status: RefundStatus,
}

/// One status change.
#[derive(Serialize, ToSchema)]
pub struct HistoryEntry {
    pub status: OrderStatus,
    #[schema(format = DateTime)]
    pub at: String,
}

/// The customer's read model of an order.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderInfo {
    pub order_id: String,
    pub shop_id: String,
    pub shop_name: String,
    pub status: OrderStatus,
    pub items: Vec<LineItem>,
    /// Σ price × quantity, KRW (no fees).
    pub total: i64,
    pub address: Address,
    /// When the food is (to be) ready; null until the shop accepts.
    #[schema(required, format = DateTime)]
    pub ready_at: Option<String>,
    /// Null until a rider accepts the delivery.
    #[schema(required)]
    pub rider: Option<Rider>,
    /// Null unless the order was rejected or cancelled after payment.
    #[schema(required)]
    pub refund: Option<Refund>,
    /// Why it was rejected or cancelled: the owner's text, `SHOP_TIMEOUT`, `NO_RIDER`,
    /// `CUSTOMER_CANCELLED` or `OPERATOR_CANCELLED` (its workflow was cancelled in
    /// Temporal); null otherwise.
    #[schema(required)]
    pub reason: Option<String>,
    /// Every status change, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// The shop owner's read model of an order of their shop.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderDtl {
    pub order_id: String,
    pub shop_id: String,
    pub status: OrderStatus,
    pub items: Vec<LineItem>,
    /// KRW.
    pub total: i64,
    pub address: Address,
    pub phone: String,
    #[schema(required, format = DateTime)]
    pub ready_at: Option<String>,
    /// Whether the owner marked the food ready (or `readyAt` passed in the workflow).
    pub ready: bool,
    #[schema(required)]
    pub reason: Option<String>,
    #[schema(required)]
    pub rider: Option<Rider>,
    #[schema(required, format = DateTime)]
    pub placed_at: Option<String>,
}

/// The rider's read model of a delivery assigned to them.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryInfo {
    pub order_id: String,
    pub status: OrderStatus,
    pub shop: Shop,
    pub address: Address,
    pub phone: String,
    pub items: Vec<LineItem>,
    #[schema(required, format = DateTime)]
    pub ready_at: Option<String>,
    pub ready: bool,
}

/// A live delivery offer to the calling rider.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Offer {
    pub order_id: String,
    pub shop: Shop,
    /// Great-circle distance from the rider to the shop, metres.
    pub distance_m: i64,
    /// The offer lapses then and goes to the next nearest rider.
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// A KakaoTalk-style message sent to the caller on a status change.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub order_id: String,
    pub status: OrderStatus,
    pub text: String,
    #[schema(format = DateTime)]
    pub at: String,
}

/// A shop.
#[derive(Serialize, ToSchema)]
pub struct Shop {
    pub id: String,
    pub name: String,
    pub lat: f64,
    pub lon: f64,
}

/// An item of a shop's menu.
#[derive(Serialize, ToSchema)]
pub struct MenuItem {
    pub id: String,
    pub name: String,
    /// KRW.
    pub price: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Owner,
    Rider,
}

/// A bearer token and who it is for.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub role: Role,
    /// The user's id (also the username).
    pub id: String,
    /// Owners only: their shop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shop_id: Option<String>,
}

/// A token that opens one order's event stream, and nothing else.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamTicket {
    /// Send as `GET /api/orders/{id}/events?ticket=<ticket>`.
    pub ticket: String,
    /// Seconds it stays good for (reconnects included).
    pub expires_in: u64,
}

/// The answer to an action on an order: its status afterwards.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionResult {
    pub status: OrderStatus,
    /// Set once the shop accepted.
    #[schema(required, format = DateTime)]
    pub ready_at: Option<String>,
    /// Set when the action refunded the payment (reject, cancel).
    #[schema(required)]
    pub refund: Option<Refund>,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    pub payment_breaker: BreakerMetrics,
    pub refunds: RefundMetrics,
}

/// Refunds as the payment ledger holds them.
#[derive(Serialize, ToSchema)]
pub struct RefundMetrics {
    /// Refunds the gateway refused for good (`refund.status: FAILED`), each
    /// waiting for an operator; shared by every process.
    pub failed: i64,
}

/// The payment gateway's circuit breaker.
#[derive(Serialize, ToSchema)]
pub struct BreakerMetrics {
    /// `closed`, `open` or `half_open`.
    #[schema(example = "closed")]
    pub state: String,
    /// Orders refused at once (503) since this process started.
    pub refused: u64,
    pub opened: u64,
    pub closed: u64,
}

#[cfg(test)]
mod tests {
    //! The mirror schemas describe the JSON the code really sends: each is
    //! checked against a value built by the same function the handlers use.

    use super::*;
    use crate::error::ApiError;
    use baedal_workflows as wf;
    use serde_json::Value;
    use std::collections::BTreeSet;

    fn doc() -> Value {
        serde_json::to_value(document()).unwrap()
    }

    fn properties(doc: &Value, schema: &str) -> BTreeSet<String> {
        doc["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("schema {schema} has properties"))
            .keys()
            .cloned()
            .collect()
    }

    fn required(doc: &Value, schema: &str) -> BTreeSet<String> {
        doc["components"]["schemas"][schema]["required"]
            .as_array()
            .map(|r| r.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object()
            .expect("a JSON object")
            .keys()
            .cloned()
            .collect()
    }

    /// A snapshot with every optional part set, so every key carries a value.
    fn snapshot() -> wf::OrderSnapshot {
        wf::OrderSnapshot {
            order_id: "o1".into(),
            customer_id: "customer1".into(),
            owner_id: "owner1".into(),
            shop: wf::ShopRef {
                id: "s1".into(),
                name: "Shop".into(),
                lat: 37.5,
                lon: 127.0,
            },
            items: vec![wf::LineItem {
                menu_id: "m1".into(),
                name: "Bibimbap".into(),
                price: 9000,
                quantity: 2,
            }],
            total: 18000,
            address: wf::Address {
                text: "Seoul".into(),
                lat: 37.51,
                lon: 127.01,
            },
            phone: "010-1234-5678".into(),
            status: wf::OrderStatus::Cancelled,
            ready_at: Some(1_700_000_000_000),
            ready: true,
            rider: Some(wf::RiderRef {
                id: "rider1".into(),
                distance_m: 420,
            }),
            refund: Some(wf::Refund {
                amount: 18000,
                status: wf::RefundStatus::Refunded,
            }),
            reason: Some(wf::reason::CUSTOMER_CANCELLED.into()),
            history: vec![wf::HistoryEntry {
                status: wf::OrderStatus::Paid,
                at: 1_700_000_000_000,
            }],
            version: 3,
        }
    }

    /// Every key the code sends is a documented property and every documented
    /// property is sent; the always-present ones are `required`.
    fn assert_matches(doc: &Value, schema: &str, value: &Value) {
        assert_eq!(
            properties(doc, schema),
            keys(value),
            "properties of {schema} vs the JSON sent"
        );
        assert_eq!(
            required(doc, schema),
            keys(value),
            "{schema}: every key is always sent"
        );
    }

    #[test]
    fn read_models_match_the_json_the_activities_build() {
        let doc = doc();
        let o = snapshot();
        let info = baedal_activities::order::order_info(&o);
        assert_matches(&doc, "OrderInfo", &info);
        assert_eq!(properties(&doc, "LineItem"), keys(&info["items"][0]));
        assert_eq!(properties(&doc, "Address"), keys(&info["address"]));
        assert_eq!(properties(&doc, "Rider"), keys(&info["rider"]));
        assert_eq!(properties(&doc, "Refund"), keys(&info["refund"]));
        assert_eq!(properties(&doc, "HistoryEntry"), keys(&info["history"][0]));

        assert_matches(&doc, "OrderDtl", &baedal_activities::shop::order_dtl(&o));

        let delivery = baedal_activities::delivery::delivery_info(&o);
        assert_matches(&doc, "DeliveryInfo", &delivery);
        assert_eq!(properties(&doc, "Shop"), keys(&delivery["shop"]));
    }

    #[test]
    fn shop_and_menu_match_their_serialization() {
        let doc = doc();
        let shop = baedal_activities::shop::Shop {
            id: "s1".into(),
            name: "Shop".into(),
            lat: 37.5,
            lon: 127.0,
            owner_id: "owner1".into(),
        };
        assert_matches(&doc, "Shop", &serde_json::to_value(shop).unwrap());
        let item = baedal_activities::shop::MenuItem {
            id: "m1".into(),
            name: "Bibimbap".into(),
            price: 9000,
        };
        assert_matches(&doc, "MenuItem", &serde_json::to_value(item).unwrap());
    }

    #[test]
    fn action_result_matches_action_json() {
        let doc = doc();
        let r = wf::ActionResult {
            status: wf::OrderStatus::Rejected,
            ready_at: None,
            refund: Some(wf::Refund {
                amount: 1,
                status: wf::RefundStatus::Pending,
            }),
            version: Some(7),
        };
        assert_matches(&doc, "ActionResult", &crate::act::action_json(&r));
    }

    #[test]
    fn status_enums_list_every_wire_value() {
        let doc = doc();
        let documented: Vec<String> = doc["components"]["schemas"]["OrderStatus"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let wire: Vec<String> = wf::OrderStatus::ALL
            .iter()
            .map(|s| {
                serde_json::to_value(s)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(documented, wire);

        let refund: Vec<Value> = wf::RefundStatus::ALL
            .iter()
            .map(|s| serde_json::to_value(s).unwrap())
            .collect();
        assert_eq!(
            doc["components"]["schemas"]["RefundStatus"]["enum"],
            Value::Array(refund)
        );
    }

    #[tokio::test]
    async fn problem_matches_every_error_body() {
        let doc = doc();
        let errors = [
            ApiError::BadRequest("x".into()),
            ApiError::Unauthorized("x".into()),
            ApiError::Forbidden("x".into()),
            ApiError::NotFound("x".into()),
            ApiError::Conflict("x".into()),
            ApiError::Unprocessable("x".into()),
            ApiError::PaymentDeclined("x".into()),
            ApiError::PaymentUnavailable("x".into(), std::time::Duration::from_secs(2)),
            ApiError::PayloadTooLarge("x".into()),
            ApiError::UnsupportedMediaType("x".into()),
            ApiError::Unavailable("x".into()),
            ApiError::Internal(anyhow::anyhow!("x")),
        ];
        for e in errors {
            let resp = axum::response::IntoResponse::into_response(e);
            let status = resp.status().as_u16();
            assert_eq!(resp.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
            // Every documented 503 promises Retry-After.
            assert_eq!(
                resp.headers().contains_key(header::RETRY_AFTER),
                status == 503,
                "{status}: Retry-After"
            );
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            assert_matches(&doc, "Problem", &body);
            assert_eq!(body["status"], status);
        }
    }

    #[test]
    fn login_response_lists_the_keys_login_sends() {
        // `auth::login` sends token, role, id, and shopId for owners only.
        let doc = doc();
        let all: BTreeSet<String> = ["token", "role", "id", "shopId"].map(String::from).into();
        assert_eq!(properties(&doc, "LoginResponse"), all);
        let always: BTreeSet<String> = ["token", "role", "id"].map(String::from).into();
        assert_eq!(required(&doc, "LoginResponse"), always);
    }
}
