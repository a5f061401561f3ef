//! The codec endpoint for operators: Temporal's Web UI sends the sealed
//! payloads of a history here and shows what comes back, so an operator reads
//! an order's phone number and address in the UI while Temporal keeps only
//! ciphertext (`make up` wires it with `--ui-codec-endpoint`). It speaks the
//! remote codec protocol: `{"payloads": [{"metadata": {k: base64}, "data":
//! base64}]}` in and out. It opens anything sealed with the deployment's key,
//! so it answers callers on this machine only (the operator's browser beside
//! the dev server); elsewhere, put it behind the operators' own sign-in.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, ClientAddr};
use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use temporalio_common::protos::temporal::api::common::v1::Payload;

/// Payloads as the remote codec protocol writes them (protobuf JSON).
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
pub struct CodecPayloads {
    payloads: Vec<CodecPayload>,
}

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
pub struct CodecPayload {
    /// Metadata values, base64.
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// The payload's bytes, base64.
    #[serde(default)]
    data: String,
}

impl CodecPayload {
    fn into_payload(self) -> ApiResult<Payload> {
        let bad = |what: &str| ApiError::unprocessable(format!("{what} is not base64"));
        let metadata = self
            .metadata
            .into_iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    B64.decode(v).map_err(|_| bad(&format!("metadata {k}")))?,
                ))
            })
            .collect::<ApiResult<_>>()?;
        Ok(Payload {
            metadata,
            data: B64.decode(self.data).map_err(|_| bad("data"))?,
            ..Default::default()
        })
    }

    fn from_payload(p: Payload) -> Self {
        CodecPayload {
            metadata: p
                .metadata
                .into_iter()
                .map(|(k, v)| (k, B64.encode(v)))
                .collect(),
            data: B64.encode(p.data),
        }
    }
}

/// Converts every payload of the request, in order.
fn each(
    body: CodecPayloads,
    convert: impl Fn(Payload) -> ApiResult<Payload>,
) -> ApiResult<Json<CodecPayloads>> {
    let payloads = body
        .payloads
        .into_iter()
        .map(|p| Ok(CodecPayload::from_payload(convert(p.into_payload()?)?)))
        .collect::<ApiResult<_>>()?;
    Ok(Json(CodecPayloads { payloads }))
}

fn this_machine_only(client: Option<std::net::IpAddr>) -> ApiResult<()> {
    match client {
        Some(ip) if ip.is_loopback() => Ok(()),
        _ => Err(ApiError::Forbidden(
            "the codec endpoint answers callers on this machine only".into(),
        )),
    }
}

/// Open payloads (for the Web UI)
#[utoipa::path(
    post,
    path = "/codec/decode",
    tag = "operator",
    operation_id = "codecDecode",
    description = "Temporal's remote codec protocol: the payloads opened (those not sealed come \
                   back as they are). Callers on this machine only.",
    request_body = CodecPayloads,
    responses(
        (status = 200, description = "The payloads, opened", body = CodecPayloads),
        crate::openapi::BodyRefusals,
        (status = 403, response = crate::openapi::Forbidden),
        (status = 500, response = crate::openapi::Internal),
    ),
)]
pub async fn decode(
    State(st): State<AppState>,
    ClientAddr(client): ClientAddr,
    Body(body): Body<CodecPayloads>,
) -> ApiResult<Json<CodecPayloads>> {
    this_machine_only(client)?;
    each(body, |p| {
        st.cipher
            .open(p)
            .map_err(|e| ApiError::unprocessable(e.to_string()))
    })
}

/// Seal payloads (for the Web UI)
#[utoipa::path(
    post,
    path = "/codec/encode",
    tag = "operator",
    operation_id = "codecEncode",
    description = "Temporal's remote codec protocol: the payloads sealed with the deployment's key \
                   (the Web UI seals what an operator sends, a signal say). Callers on this machine only.",
    request_body = CodecPayloads,
    responses(
        (status = 200, description = "The payloads, sealed", body = CodecPayloads),
        crate::openapi::BodyRefusals,
        (status = 403, response = crate::openapi::Forbidden),
        (status = 500, response = crate::openapi::Internal),
    ),
)]
pub async fn encode(
    State(st): State<AppState>,
    ClientAddr(client): ClientAddr,
    Body(body): Body<CodecPayloads>,
) -> ApiResult<Json<CodecPayloads>> {
    this_machine_only(client)?;
    each(body, |p| {
        st.cipher
            .seal(&p)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("{e}")))
    })
}
