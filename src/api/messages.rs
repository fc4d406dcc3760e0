//! `POST /v1/messages` and `GET /v1/messages/{id}`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::{Account, AccountSettings};
use super::error::ApiError;
use super::idempotency;
use super::json::ApiJson;
use crate::compliance::Submission;
use crate::encoding::Encoding;
use crate::logging::mask;
use crate::message::{ErrorInfo, Kind, Message, MessageId, Status};

/// Body of `POST /v1/messages`. Fields not listed here are ignored.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SendRequest {
    /// Recipient in E.164: `+`, the country code and the number, digits only (the gateway
    /// also reads spaces and punctuation, which this pattern leaves out). Matching the
    /// pattern is necessary, not sufficient: a number that is not valid in its country's
    /// numbering plan, or cannot receive SMS (a landline), is refused 422 `invalid_number`.
    #[schema(example = "+447400123456", pattern = r"^\+[1-9][0-9]{6,14}$")]
    pub to: String,
    /// Sender id: 1–11 of `A–Z a–z 0–9 . - _` and space (not starting with a space), or a
    /// number / short code (optional `+`, 3–15 digits); anything else is 422
    /// `sender_not_allowed`. The schema requires it although an account with a
    /// `default_from` may leave it out (without one, leaving it out is 400
    /// `malformed_request`). Whether a valid sender may be used is the account's and the
    /// country's rules (`sender_not_owned`, `sender_not_allowed`).
    #[schema(
        example = "ACME",
        value_type = String,
        required = true,
        pattern = r"^(\+?[0-9]{3,15}|[A-Za-z0-9._-][A-Za-z0-9 ._-]{0,10})$"
    )]
    #[serde(default)]
    pub from: Option<String>,
    /// Text (UTF-8), not empty (else 400 `malformed_request`). At most `maxLength`
    /// characters (Unicode code points): what always fits in the gateway's
    /// `messages.max_segments` (and every country's `max_segments`) in the worst case
    /// (UCS-2 with characters outside the BMP: 35 in one SMS, 33 per concatenated part),
    /// less the opt-out text a country appends to marketing. Longer texts may still fit
    /// (GSM 03.38 carries 153 per part); over the limit is 422 `text_too_long`.
    #[schema(example = "Your code is 123456", min_length = 1, max_length = 302)]
    pub text: String,
    /// Priority class; `transactional` when absent.
    #[serde(default)]
    pub kind: Option<Kind>,
    /// Validity in seconds, 1 to the gateway's `messages.max_validity_s` (else 422
    /// `validity_invalid`); the kind's default when absent. Written as an integer
    /// (no fraction or exponent).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 259200)]
    pub validity_s: Option<u64>,
    /// Webhook target: an `http://` or `https://` URL (else 400 `malformed_request`).
    #[serde(default)]
    #[schema(pattern = "^https?://")]
    pub callback_url: Option<String>,
    /// Client's reference (any string; returned as given).
    #[serde(default)]
    pub client_ref: Option<String>,
    /// Scheduled send time (RFC 3339); now when absent or in the past.
    #[serde(default)]
    pub send_at: Option<DateTime<Utc>>,
}

/// Body of the 202 response.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SendResponse {
    /// Message id.
    #[schema(example = "01KA2B3C4D5E6F7G8H9J0KMNPQ")]
    pub id: String,
    /// `queued` or `scheduled`.
    pub status: Status,
    /// Number of SMS segments.
    pub segments: u32,
    /// `gsm7` or `ucs2`.
    #[schema(value_type = super::openapi::Encoding)]
    pub encoding: Encoding,
    /// Recipient's country (ISO alpha-2).
    #[schema(example = "GB")]
    pub country: String,
}

/// Body of `GET /v1/messages/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageView {
    /// Message id.
    pub id: String,
    /// Recipient.
    pub to: String,
    /// Sender.
    pub from: String,
    /// Kind.
    pub kind: Kind,
    /// Current status.
    pub status: Status,
    /// Segment count.
    pub segments: u32,
    /// Segments with a delivered receipt.
    pub segments_delivered: u32,
    /// Encoding.
    #[schema(value_type = super::openapi::Encoding)]
    pub encoding: Encoding,
    /// Recipient's country.
    pub country: String,
    /// Client's reference.
    pub client_ref: Option<String>,
    /// Carrier that took it.
    pub carrier: Option<String>,
    /// SMSC ids, one per accepted segment.
    pub smsc_message_ids: Vec<String>,
    /// Why it failed, if it did.
    pub error: Option<ErrorInfo>,
    /// Accepted at.
    pub created_at: DateTime<Utc>,
    /// Scheduled for.
    pub send_at: Option<DateTime<Utc>>,
    /// Not submitted after.
    pub expires_at: DateTime<Utc>,
    /// Every segment accepted by the carrier at.
    pub submitted_at: Option<DateTime<Utc>>,
    /// Final status reached at.
    pub done_at: Option<DateTime<Utc>>,
}

impl From<&Message> for MessageView {
    fn from(m: &Message) -> Self {
        Self {
            id: m.id.to_string(),
            to: m.to.clone(),
            from: m.from.clone(),
            kind: m.kind,
            status: m.status,
            segments: m.segments.len() as u32,
            segments_delivered: m
                .segments
                .iter()
                .filter(|s| s.state == crate::message::SegmentState::Delivered)
                .count() as u32,
            encoding: m.encoding,
            country: m.country.clone(),
            client_ref: m.client_ref.clone(),
            carrier: m.carrier.clone(),
            smsc_message_ids: m.smsc_message_ids(),
            error: m.error.clone(),
            created_at: m.created_at,
            send_at: m.send_at,
            expires_at: m.expires_at,
            submitted_at: m.submitted_at,
            done_at: m.done_at,
        }
    }
}

/// `POST /v1/messages`: admit, store (durably, before answering), answer 202.
/// With an `Idempotency-Key`, a repeat returns the first answer.
#[utoipa::path(
    post,
    path = "/v1/messages",
    operation_id = "send_message",
    tag = "messages",
    summary = "Send one message",
    description = "Checks the message (number, opt-out, country rules), stores it durably and answers 202. \
                   The 202 is sent only once the message is committed to the store.",
    security(("bearer" = [])),
    params(super::openapi::IdempotencyKey),
    request_body = SendRequest,
    responses(
        (status = 202, description = "Accepted and durable: `queued`, or `scheduled` for a later `send_at` (or deferred by quiet hours).",
            body = SendResponse,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same Idempotency-Key."))),
        (status = 400, description = "`malformed_request`: not JSON, wrong types, no `to` or `text`, an empty `text`, no `from` (and no `default_from`), a `callback_url` that is not http(s), an unknown `kind`, a malformed Idempotency-Key.", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "`unauthorized`.", body = super::openapi::ErrorEnvelope),
        (status = 409, description = "`idempotency_conflict`: the first request with this Idempotency-Key is still being processed.", body = super::openapi::ErrorEnvelope),
        (status = 408, description = "`request_timeout`: the body did not arrive within `http.body_timeout_s`; the connection closes.", body = super::openapi::ErrorEnvelope),
        (status = 413, description = "`payload_too_large`.", body = super::openapi::ErrorEnvelope),
        (status = 422, description = "Admission refused: `invalid_number`, `unsupported_country`, `opted_out`, `consent_required`, `sender_not_allowed`, `sender_not_owned`, `content_blocked`, `template_not_registered`, `opt_out_text_missing`, `quiet_hours`, `frequency_capped`, `text_too_long`, `validity_invalid`; `idempotency_mismatch`: the Idempotency-Key was first used with another body.", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "`overloaded` (backlog full) or `store_unavailable`; nothing was accepted.", body = super::openapi::ErrorEnvelope,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
    )
)]
pub async fn send(
    State(state): State<AppState>,
    Account(account): Account,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SendRequest>,
) -> Result<Response, ApiError> {
    // Opt-outs another node took count here at once.
    state.preferences.sync().await;
    idempotency::once(
        &state,
        &account,
        &headers,
        idempotency::Route::Send,
        req,
        |req, keyed| accept(&state, &account, req, keyed),
    )
    .await
}

/// Admits and enqueues one message; the 202 is stored with it when keyed.
async fn accept(
    state: &AppState,
    account: &Arc<str>,
    req: SendRequest,
    keyed: Option<idempotency::Keyed>,
) -> Result<Response, ApiError> {
    let settings = state
        .accounts
        .settings(account)
        .ok_or_else(ApiError::unauthorized)?;
    let now = Utc::now();
    let mut reserved = settings.limits.check(account, 1, Instant::now(), now)?;
    settings
        .limits
        .check_shared(account, 1, &mut reserved)
        .await?;
    let admitted = match admit(state, settings, req, now) {
        Ok(admitted) => admitted,
        Err(e) => {
            settings.limits.refund(&mut reserved, 1);
            return Err(e);
        }
    };
    let Admitted {
        message,
        response,
        span,
    } = admitted;
    let kind = message.kind;
    let body = serde_json::to_vec(&response).unwrap_or_default();
    let record = keyed.map(|k| k.record(account, StatusCode::ACCEPTED, body.clone(), now));
    if let Err(e) = state.queue.enqueue(vec![message], record).await {
        settings.limits.refund(&mut reserved, 1);
        return Err(e.into());
    }
    state
        .metrics
        .accepted
        .with_label_values(&[kind.as_str()])
        .inc();
    span.in_scope(|| log_accepted(&response));
    Ok((
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// One message admitted and built, not yet stored.
pub(super) struct Admitted {
    /// The message to store.
    pub message: Message,
    /// Its part of the answer.
    pub response: SendResponse,
    /// Its `message` span (log lines about it go inside).
    pub span: tracing::Span,
}

/// Checks one request of `account` and admits it ([`crate::compliance`]),
/// filling in the account's default sender; a refusal is counted by reason.
/// Stores nothing. Shared by single and batch sends.
pub(super) fn admit(
    state: &AppState,
    account: &AccountSettings,
    mut req: SendRequest,
    now: DateTime<Utc>,
) -> Result<Admitted, ApiError> {
    let kind = req.kind.unwrap_or(Kind::Transactional);
    let span = tracing::info_span!(
        "message",
        id = tracing::field::Empty,
        account = %account.id,
        kind = kind.as_str(),
        to = %mask(&req.to),
    );
    let _entered = span.enter();
    let from = checked_from(&mut req, account.default_from.as_ref())?;
    let asked_at = req.send_at;
    let admitted = state.admission.admit(
        Submission {
            account: account.id.to_string(),
            to: req.to,
            from,
            text: req.text,
            kind,
            validity_s: req.validity_s,
            send_at: req.send_at,
            client_ref: req.client_ref,
            callback_url: req.callback_url,
            keyword_reply: false,
        },
        now,
    );
    let new = match admitted {
        Ok(new) => new,
        Err(refused) => {
            let country = refused.country.as_deref().unwrap_or("unknown");
            state
                .metrics
                .refused
                .with_label_values(&[refused.code(), country, kind.as_str()])
                .inc();
            tracing::debug!(code = refused.code(), "message refused");
            return Err(refused.refusal.into());
        }
    };
    if new.send_at != asked_at {
        state
            .metrics
            .deferred
            .with_label_values(&[new.country.as_str()])
            .inc();
    }
    let concat_ref = state.concat_ref.fetch_add(1, Ordering::Relaxed);
    let message = Message::new(new, now, concat_ref);
    span.record("id", tracing::field::display(&message.id));
    let response = SendResponse {
        id: message.id.to_string(),
        status: message.status,
        segments: message.segments.len() as u32,
        encoding: message.encoding,
        country: message.country.clone(),
    };
    drop(_entered);
    Ok(Admitted {
        message,
        response,
        span,
    })
}

/// The checks of a send body that need no state, in this order: a text,
/// a sender (the request's, else the account's `default_from`, taken out of
/// the request), an http(s) `callback_url`. Returns the sender.
pub(crate) fn checked_from(
    req: &mut SendRequest,
    default_from: Option<&String>,
) -> Result<String, ApiError> {
    if req.text.is_empty() {
        return Err(ApiError::malformed("text must not be empty."));
    }
    let from = req
        .from
        .take()
        .or_else(|| default_from.cloned())
        .ok_or_else(|| {
            ApiError::malformed("from is required (the account has no default_from).")
        })?;
    if let Some(url) = &req.callback_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(ApiError::malformed(
            "callback_url must be an http:// or https:// URL.",
        ));
    }
    Ok(from)
}

/// The log line of a message stored durably (inside its span).
pub(super) fn log_accepted(response: &SendResponse) {
    tracing::debug!(
        status = response.status.as_str(),
        segments = response.segments,
        country = %response.country,
        "message accepted"
    );
}

/// `GET /v1/messages/{id}`: the message's status; another account's id is 404.
#[utoipa::path(
    get,
    path = "/v1/messages/{id}",
    operation_id = "get_message",
    tag = "messages",
    summary = "A message's status",
    security(("bearer" = [])),
    params(("id" = String, Path, pattern = r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$",
        description = "The message id from the 202: a ULID (26 characters of Crockford's base 32, either case). \
                       Anything else is 404 `not_found`, like an unknown id.")),
    responses(
        (status = 200, description = "The message as its account sees it.", body = MessageView),
        (status = 401, description = "`unauthorized`.", body = super::openapi::ErrorEnvelope),
        (status = 404, description = "`not_found`: unknown id or another account's message.", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "`store_unavailable`.", body = super::openapi::ErrorEnvelope),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Account(account): Account,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    let id: MessageId = id.parse().map_err(|_| ApiError::not_found("message"))?;
    match state.queue.get(id).await? {
        Some(m) if *m.account == *account => Ok(Json(MessageView::from(&m))),
        _ => Err(ApiError::not_found("message")),
    }
}
