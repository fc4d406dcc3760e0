//! The JSON side door: `GET /stats` and `GET /submits?offset=N&limit=M`.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Query, State},
    routing::get,
};
use serde::Deserialize;
use tokio::net::TcpListener;

use super::{Shared, records::SubmitRecord, stats::SimStats};

/// Default and maximum page size of `GET /submits`.
const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 100_000;

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let shutdown = shared.shutdown.clone();
    let app = Router::new()
        .route("/stats", get(stats))
        .route("/submits", get(submits))
        .with_state(shared);
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::warn!(%error, "http server failed");
    }
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<SimStats> {
    Json(shared.stats())
}

/// Records by absolute index: `offset` counts from the first submit ever recorded.
async fn submits(
    State(shared): State<Arc<Shared>>,
    Query(page): Query<Page>,
) -> Json<Vec<SubmitRecord>> {
    let limit = page.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    Json(shared.records.page(page.offset, limit))
}
