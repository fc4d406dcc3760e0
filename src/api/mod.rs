//! The HTTP API (axum on hyper): the pipeline's source. Requests are
//! authenticated, parsed, admitted by [`crate::compliance`] and handed to the
//! [`crate::queue`]; the contract is `shared/spec/http-api.md`.
//!
//! [`router`] is the stage's public entry.

pub mod auth;
pub(crate) mod batch;
mod dlr;
pub mod error;
pub mod idempotency;
mod inbound;
pub(crate) mod json;
pub mod limits;
pub mod messages;
mod openapi;
mod ops;
mod preferences;
pub mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{Next, from_fn_with_state, map_response_with_state};
use axum::response::Response;
use axum::routing::{get, post};

use crate::compliance::{Admission, Preferences};
use crate::metrics::Metrics;
use crate::queue::{PreferenceKind, Queue};

pub use auth::Accounts;
pub use error::ApiError;

/// What every handler can reach: a handle to [`Shared`]. axum clones the
/// state several times per request (the handler, each layer with state),
/// so a clone is one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The handle to `shared`.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The API stage's state, behind [`AppState`].
pub struct Shared {
    /// API keys → accounts.
    pub accounts: Arc<Accounts>,
    /// Admission checks.
    pub admission: Arc<Admission>,
    /// Opt-out and consent lists.
    pub preferences: Arc<Preferences>,
    /// The countries file, for `POST /admin/reload`.
    pub countries_file: Arc<std::path::PathBuf>,
    /// Where accepted messages go.
    pub queue: Arc<Queue>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Carrier binds currently up (readiness).
    pub binds_up: Arc<AtomicUsize>,
    /// Next concatenation reference (wraps at 256).
    pub concat_ref: Arc<AtomicU8>,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Largest accepted body of `POST /v1/messages/batch`.
    pub max_batch_body_bytes: usize,
    /// Longest wait for a whole request body (then 408 `request_timeout`).
    pub body_timeout: std::time::Duration,
    /// Idempotency keys being processed right now.
    pub idempotency: Arc<idempotency::InFlightKeys>,
    /// How long an Idempotency-Key is remembered.
    pub idempotency_window: chrono::Duration,
    /// Delivery receipts given up, for `GET /admin/dlr/unmatched`.
    pub dead_letters: crate::dlr::DeadLetters,
}

/// The API's routes with their layers.
pub fn router(state: AppState) -> Router {
    // `ApiJson`/`BatchJson` enforce their own limits (with the 413 envelope);
    // any other body extractor gets `http.max_body_bytes` instead of axum's 2 MB.
    let limit = DefaultBodyLimit::max(state.max_body_bytes);
    Router::new()
        .route("/v1/messages", post(messages::send))
        .route("/v1/messages/batch", post(batch::send))
        .route("/v1/messages/{id}", get(messages::get))
        .route("/v1/inbound", get(inbound::list))
        .route(
            "/v1/opt-outs/{e164}",
            preferences::routes(PreferenceKind::OptOut),
        )
        .route(
            "/v1/consents/{e164}",
            preferences::routes(PreferenceKind::Consent),
        )
        .route("/admin/reload", post(ops::reload))
        .route("/admin/dlr/unmatched", get(dlr::unmatched))
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/openapi.json", get(openapi::serve))
        .route_layer(from_fn_with_state(state.clone(), time_requests))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(limit)
        .layer(map_response_with_state(state.clone(), count_rejections))
        .with_state(state)
}

/// Observes how long each routed request took to answer
/// (`smsgate_http_request_seconds`, by route template and status class).
async fn time_requests(
    State(state): State<AppState>,
    route: MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let class = match response.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    state
        .metrics
        .http_request
        .with_label_values(&[route.as_str(), class])
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Counts every error response by its code (`smsgate_messages_rejected_total`).
async fn count_rejections(State(state): State<AppState>, response: Response) -> Response {
    if let Some(error::ErrorCode(code)) = response.extensions().get::<error::ErrorCode>() {
        state.metrics.rejected.with_label_values(&[code]).inc();
    }
    response
}
