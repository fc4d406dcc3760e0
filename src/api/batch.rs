//! `POST /v1/messages/batch`: up to 1,000 messages in one request. Each is
//! checked and admitted exactly as a single send; every accepted one is stored
//! in one durable commit (with the request's idempotency record), and the
//! answer has one result per message, in request order.
//!
//! The account's rate limit and daily quota count every message of the batch
//! and refuse the batch whole (429) when it does not fit; see [`super::limits`].

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::{Account, AccountSettings};
use super::error::ApiError;
use super::idempotency;
use super::json::BatchJson;
use super::messages::{self, Admitted, SendRequest};
use crate::encoding::Encoding;
use crate::message::Status;

/// Most messages in one batch.
pub const MAX_MESSAGES: usize = 1000;

/// Body of `POST /v1/messages/batch`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchRequest {
    /// 1 to 1,000 messages, each the body of `POST /v1/messages`. A message
    /// that does not have that shape gets its own `malformed_request` result;
    /// the others still go.
    #[schema(value_type = Vec<SendRequest>, min_items = 1, max_items = 1000)]
    pub messages: Vec<serde_json::Value>,
}

/// The answer: one result per message, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    /// Messages accepted (stored durably).
    pub accepted: u32,
    /// Messages refused.
    pub refused: u32,
    /// One per message of the request, in its order.
    pub results: Vec<BatchResult>,
}

/// The 422 answer when no message was accepted: the error envelope
/// (`batch_refused`) with every message's result.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchRefused {
    /// `batch_refused`.
    pub error: BatchError,
    /// Always 0.
    pub accepted: u32,
    /// Messages refused (all of them).
    pub refused: u32,
    /// One per message of the request, in its order.
    pub results: Vec<BatchResult>,
}

/// One message's outcome: accepted (`id`, `status`, `segments`, `encoding`,
/// `country`, as in the 202 of `POST /v1/messages`) or refused (`error`).
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResult {
    /// Position of the message in the request (0-based).
    pub index: u32,
    /// Message id (accepted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `queued` or `scheduled` (accepted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Number of SMS segments (accepted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<u32>,
    /// `gsm7` or `ucs2` (accepted).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<super::openapi::Encoding>)]
    pub encoding: Option<Encoding>,
    /// Recipient's country (accepted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Why it was refused (refused): the code and sentence a single send would get.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<BatchError>,
}

/// A refusal: the error envelope's `code` and `message`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchError {
    /// Stable machine code.
    #[schema(value_type = super::openapi::ErrorCode)]
    pub code: &'static str,
    /// Human-readable sentence.
    pub message: String,
}

impl BatchResult {
    fn accepted(index: usize, r: messages::SendResponse) -> Self {
        Self {
            index: index as u32,
            id: Some(r.id),
            status: Some(r.status),
            segments: Some(r.segments),
            encoding: Some(r.encoding),
            country: Some(r.country),
            error: None,
        }
    }

    fn refused(index: usize, e: ApiError) -> Self {
        Self {
            index: index as u32,
            id: None,
            status: None,
            segments: None,
            encoding: None,
            country: None,
            error: Some(BatchError {
                code: e.code,
                message: e.message,
            }),
        }
    }
}

/// `POST /v1/messages/batch`: admit each message, store the accepted ones in
/// one commit, answer per message.
#[utoipa::path(
    post,
    path = "/v1/messages/batch",
    operation_id = "send_batch",
    tag = "messages",
    summary = "Send up to 1,000 messages",
    description = "Each message is checked and admitted as `POST /v1/messages` would; the accepted ones are \
                   stored durably in one commit before the answer. `results` has one entry per message, in \
                   request order: accepted ones carry `id`, `status`, `segments`, `encoding`, `country`; refused \
                   ones carry `error` (`code`, `message`). The account's rate limit and daily quota count every \
                   message and refuse the whole batch (429) when it does not fit. The body limit is \
                   `http.max_batch_body_bytes`.",
    security(("bearer" = [])),
    params(super::openapi::IdempotencyKey),
    request_body = BatchRequest,
    responses(
        (status = 200, description = "At least one message accepted and durable; `results` says what happened to each.",
            body = BatchResponse,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same Idempotency-Key."))),
        (status = 400, description = "`malformed_request`: not JSON, no `messages` array, not 1 to 1,000 messages, or a malformed Idempotency-Key.", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "`unauthorized`.", body = super::openapi::ErrorEnvelope),
        (status = 409, description = "`idempotency_conflict`: the first request with this Idempotency-Key is still being processed.", body = super::openapi::ErrorEnvelope),
        (status = 408, description = "`request_timeout`: the body did not arrive within `http.body_timeout_s`; the connection closes.", body = super::openapi::ErrorEnvelope),
        (status = 413, description = "`payload_too_large`: body over `http.max_batch_body_bytes`.", body = super::openapi::ErrorEnvelope),
        (status = 422, description = "`batch_refused`: no message was accepted; `results` says why for each. (`idempotency_mismatch`, in the error envelope: the Idempotency-Key was first used with another body.)", body = BatchRefused),
        (status = 429, description = "`rate_limited` (the account's messages/s) or `quota_exceeded` (its daily quota): nothing was accepted.", body = super::openapi::ErrorEnvelope,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 503, description = "`overloaded` (backlog full) or `store_unavailable`; nothing was accepted.", body = super::openapi::ErrorEnvelope,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
    )
)]
pub async fn send(
    State(state): State<AppState>,
    Account(account): Account,
    headers: HeaderMap,
    BatchJson(req): BatchJson<BatchRequest>,
) -> Result<Response, ApiError> {
    // Opt-outs another node took count here at once.
    state.preferences.sync().await;
    check_count(&req)?;
    idempotency::once(
        &state,
        &account,
        &headers,
        idempotency::Route::Batch,
        req,
        |req, keyed| accept(&state, &account, req, keyed),
    )
    .await
}

/// Admits every message, stores the accepted ones in one commit (with the
/// answer when keyed), answers per message.
async fn accept(
    state: &AppState,
    account: &Arc<str>,
    req: BatchRequest,
    keyed: Option<idempotency::Keyed>,
) -> Result<Response, ApiError> {
    let settings = state
        .accounts
        .settings(account)
        .ok_or_else(ApiError::unauthorized)?;
    let total = req.messages.len();
    let now = Utc::now();
    let mut reserved = settings.limits.check(account, total, Instant::now(), now)?;
    settings
        .limits
        .check_shared(account, total, &mut reserved)
        .await?;

    let mut results = Vec::with_capacity(total);
    let mut admitted: Vec<Admitted> = Vec::with_capacity(total);
    for (index, value) in req.messages.into_iter().enumerate() {
        match admit_one(state, settings, index, value, now) {
            Ok(a) => {
                results.push(BatchResult::accepted(index, a.response.clone()));
                admitted.push(a);
            }
            Err(e) => {
                // Single sends are counted by the error-envelope middleware.
                state.metrics.rejected.with_label_values(&[e.code]).inc();
                results.push(BatchResult::refused(index, e));
            }
        }
    }
    let accepted = admitted.len();
    let refused = total - accepted;
    if accepted == 0 {
        settings.limits.refund(&mut reserved, total as u64);
        tracing::debug!(%account, refused, "batch refused whole");
        let body = BatchRefused {
            error: BatchError {
                code: "batch_refused",
                message: format!(
                    "None of the {total} messages was accepted; results says why for each."
                ),
            },
            accepted: 0,
            refused: refused as u32,
            results,
        };
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response());
    }
    settings.limits.refund(&mut reserved, refused as u64);

    let body = serde_json::to_vec(&BatchResponse {
        accepted: accepted as u32,
        refused: refused as u32,
        results,
    })
    .unwrap_or_default();
    let record = keyed.map(|k| k.record(account, StatusCode::OK, body.clone(), now));
    let mut spans = Vec::with_capacity(accepted);
    let mut batch = Vec::with_capacity(accepted);
    for a in admitted {
        batch.push(a.message);
        spans.push((a.span, a.response));
    }
    let kinds: Vec<_> = batch.iter().map(|m| m.kind).collect();
    if let Err(e) = state.queue.enqueue(batch, record).await {
        settings.limits.refund(&mut reserved, accepted as u64);
        return Err(e.into());
    }
    for kind in kinds {
        state
            .metrics
            .accepted
            .with_label_values(&[kind.as_str()])
            .inc();
    }
    for (span, response) in &spans {
        span.in_scope(|| messages::log_accepted(response));
    }
    tracing::debug!(%account, accepted, refused, "batch accepted");
    // 200 with one result per message, as the HTTP contract says (the
    // accepted ones are durable already).
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// One message of the batch: shaped as a single send's body, then admitted.
fn admit_one(
    state: &AppState,
    settings: &AccountSettings,
    index: usize,
    value: serde_json::Value,
    now: chrono::DateTime<Utc>,
) -> Result<Admitted, ApiError> {
    messages::admit(state, settings, message_request(index, value)?, now)
}

/// A batch holds 1 to [`MAX_MESSAGES`] messages (else 400 `malformed_request`).
pub(crate) fn check_count(req: &BatchRequest) -> Result<(), ApiError> {
    if req.messages.is_empty() || req.messages.len() > MAX_MESSAGES {
        return Err(ApiError::malformed(format!(
            "messages must hold 1 to {MAX_MESSAGES} messages (it holds {}).",
            req.messages.len()
        )));
    }
    Ok(())
}

/// Message `index` of a batch read as the body of a single send (else its
/// own `malformed_request` result).
pub(crate) fn message_request(
    index: usize,
    value: serde_json::Value,
) -> Result<SendRequest, ApiError> {
    serde_json::from_value(value)
        .map_err(|e| ApiError::malformed(format!("Message {index} is not valid: {e}.")))
}
