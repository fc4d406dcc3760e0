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
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.queue.refresh_gauges();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the store answers and at least one carrier bind is up.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let binds = state.binds_up.load(Ordering::Relaxed);
    if binds == 0 {
        return Err(ApiError::not_ready("No carrier bind is up."));
    }
    Ok(Json(json!({ "status": "ready", "binds_up": binds })))
}

/// `POST /admin/reload`: re-reads the countries file (admin accounts only).
/// An invalid file is refused with 422 `rules_invalid`; the old rules stay.
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
