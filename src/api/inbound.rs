//! `GET /v1/inbound`: the account's inbound (MO) messages, oldest first,
//! paged with a cursor.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Account;
use super::error::ApiError;
use crate::message::MessageId;
use crate::queue::InboundRecord;

/// Page size when the request names none.
const DEFAULT_LIMIT: usize = 100;
/// Largest page.
const MAX_LIMIT: usize = 1000;

/// Query of `GET /v1/inbound`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InboundQuery {
    /// Return messages received after the one with this id (the previous
    /// page's `next`, a ULID); from the oldest when absent. Anything but a ULID
    /// is 400 `malformed_request`.
    #[param(pattern = r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
    pub after: Option<String>,
    /// Page size, 1–1000 (default 100); else 400 `malformed_request`.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// One inbound message.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboundView {
    /// Id (sorts by arrival).
    pub id: String,
    /// The handset's number (E.164 when it parsed).
    pub from: String,
    /// The number or sender id it was written to.
    pub to: String,
    /// The decoded text.
    pub text: String,
    /// `stop`, `start` or `help` when the text was that keyword.
    pub keyword: Option<String>,
    /// The carrier it came in on.
    pub carrier: String,
    /// When the gateway received it.
    pub received_at: DateTime<Utc>,
}

impl From<InboundRecord> for InboundView {
    fn from(r: InboundRecord) -> Self {
        Self {
            id: r.id.to_string(),
            from: r.from,
            to: r.to,
            text: r.text,
            keyword: r.keyword,
            carrier: r.carrier,
            received_at: r.received_at,
        }
    }
}

/// A page of inbound messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboundPage {
    /// The messages, oldest first.
    pub messages: Vec<InboundView>,
    /// Cursor for the next page (`?after=`): the last id of this page, or the
    /// request's own cursor when the page is empty.
    pub next: Option<String>,
}

/// `GET /v1/inbound`: the account's inbound messages.
#[utoipa::path(
    get,
    path = "/v1/inbound",
    tag = "inbound",
    summary = "Inbound (MO) messages sent to the account's numbers",
    security(("bearer" = [])),
    params(InboundQuery),
    responses(
        (status = 200, description = "A page of inbound messages, oldest first.", body = InboundPage),
        (status = 400, description = "`malformed_request`: bad cursor or limit.", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "`unauthorized`.", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "`store_unavailable`.", body = super::openapi::ErrorEnvelope),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Account(account): Account,
    query: Result<Query<InboundQuery>, QueryRejection>,
) -> Result<Json<InboundPage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::malformed(e.body_text()))?;
    let after = match &query.after {
        Some(a) => Some(
            a.parse::<MessageId>()
                .map_err(|_| ApiError::malformed("after must be an id from a previous page."))?,
        ),
        None => None,
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::malformed(format!(
            "limit must be between 1 and {MAX_LIMIT}."
        )));
    }
    let records = state.queue.list_inbound(&account, after, limit).await?;
    let next = records
        .last()
        .map(|r| r.id.to_string())
        .or(query.after.clone());
    Ok(Json(InboundPage {
        messages: records.into_iter().map(InboundView::from).collect(),
        next,
    }))
}
