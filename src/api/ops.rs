//! Operations endpoints: `/metrics`, `/healthz`, `/readyz`.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;
use super::auth::Admin;
use super::error::ApiError;
use crate::compliance::RuleBook;

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    description = "Every `smsgate_*` metric in the Prometheus text exposition format 0.0.4. No authentication.",
    responses((status = 200, description = "Prometheus text format.", body = String, content_type = "text/plain; version=0.0.4")),
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.queue.refresh_gauges();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// `GET /healthz`: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness",
    responses((status = 200, description = "The process runs.", body = super::openapi::Health)),
)]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the store answers and at least one carrier bind is up.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness",
    responses(
        (status = 200, description = "At least one carrier bind is up.", body = super::openapi::Ready),
        (status = 503, description = "`not_ready`: no carrier bind is up.", body = super::openapi::ErrorEnvelope,
            headers(("Retry-After" = u32, description = "Seconds to wait before asking again."))),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let binds = state.binds_up.load(Ordering::Relaxed);
    if binds == 0 {
        return Err(ApiError::not_ready("No carrier bind is up."));
    }
    Ok(Json(json!({ "status": "ready", "binds_up": binds })))
}

/// `POST /admin/reload`: re-reads the countries file (admin accounts only).
/// An invalid file is refused with 422 `rules_invalid`; the old rules stay.
#[utoipa::path(
    post,
    path = "/admin/reload",
    operation_id = "reload_rules",
    tag = "operations",
    summary = "Reload the country rules",
    description = "Re-reads the countries file (`compliance.countries`). Needs an admin account's key. \
                   An invalid file is refused and the rules in force stay.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new rules are in force.", body = super::openapi::Reloaded),
        (status = 401, description = "`unauthorized`.", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "`forbidden`: not an admin account's key.", body = super::openapi::ErrorEnvelope),
        (status = 422, description = "`rules_invalid`: the file was refused (the message says why); the old rules stay.", body = super::openapi::ErrorEnvelope),
    ),
)]
pub async fn reload(
    State(state): State<AppState>,
    Admin(_): Admin,
) -> Result<Json<serde_json::Value>, ApiError> {
    let path = state.countries_file.as_ref().clone();
    let rules = tokio::task::spawn_blocking(move || RuleBook::load(&path))
        .await
        .map_err(|e| ApiError::rules_invalid(format!("reload task failed: {e}")))?
        .map_err(|e| ApiError::rules_invalid(e.to_string()))?;
    let countries = rules.countries().count();
    state.admission.set_rules(rules);
    Ok(Json(json!({ "reloaded": true, "countries": countries })))
}
