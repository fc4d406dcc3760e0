//! `GET /admin/dlr/unmatched`: the delivery receipts that never found their
//! message (the DLR stage's dead-letter record), newest first. Admin accounts
//! only.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Admin;
use super::error::ApiError;
use crate::dlr::UnmatchedReceipt;

/// Receipts listed when the request names no limit.
const DEFAULT_LIMIT: usize = 100;
/// Most receipts in one answer.
const MAX_LIMIT: usize = 1000;

/// Query of `GET /admin/dlr/unmatched`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnmatchedQuery {
    /// Only this carrier's receipts.
    pub carrier: Option<String>,
    /// How many, 1–1000 (default 100); else 400 `malformed_request`.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// The dead-letter record.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnmatchedList {
    /// Receipts given up, newest first (the record keeps the newest 10,000, in memory).
    pub receipts: Vec<UnmatchedReceipt>,
    /// Receipts given up since the gateway started (all carriers).
    pub total: u64,
}

/// `GET /admin/dlr/unmatched`: receipts given up (admin accounts only).
#[utoipa::path(
    get,
    path = "/admin/dlr/unmatched",
    operation_id = "unmatched_receipts",
    tag = "operations",
    summary = "Delivery receipts that matched no message",
    description = "The dead-letter record of the receipt path: receipts whose message id matched no \
                   message after the carrier's `receipt_wait_s` of retries, and receipts that could not \
                   be read, newest first. Kept in memory (the newest 10,000); \
                   `smsgate_dlr_unmatched_total{carrier}` counts them. Needs an admin account's key.",
    security(("bearer" = [])),
    params(UnmatchedQuery),
    responses(
        (status = 200, description = "The receipts given up, newest first.", body = UnmatchedList),
        (status = 400, description = "`malformed_request`: bad limit.", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "`unauthorized`.", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "`forbidden`: not an admin account's key.", body = super::openapi::ErrorEnvelope),
    ),
)]
pub async fn unmatched(
    State(state): State<AppState>,
    Admin(_): Admin,
    query: Result<Query<UnmatchedQuery>, QueryRejection>,
) -> Result<Json<UnmatchedList>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::malformed(e.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::malformed(format!(
            "limit must be between 1 and {MAX_LIMIT}."
        )));
    }
    let (receipts, total) = state.dead_letters.list(query.carrier.as_deref(), limit);
    Ok(Json(UnmatchedList { receipts, total }))
}
