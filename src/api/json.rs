//! A JSON body extractor that speaks the error envelope: any content type is
//! accepted (curl's `-d` sends form-encoded), bad JSON or wrong types are 400
//! `malformed_request` with serde's explanation, an oversized body is 413.

use std::time::Duration;

use axum::extract::{FromRequest, Request};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;

/// A request body parsed as JSON into `T` (at most `http.max_body_bytes`).
pub struct ApiJson<T>(pub T);

/// A `POST /v1/messages/batch` body parsed as JSON into `T` (at most
/// `http.max_batch_body_bytes`).
pub struct BatchJson<T>(pub T);

/// How much of an oversized body is still read (and dropped) before the 413,
/// and for how long at most.
const DRAIN_BYTES: usize = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

impl<T> FromRequest<AppState> for ApiJson<T>
where
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        read(req, state.max_body_bytes, state.body_timeout)
            .await
            .map(ApiJson)
    }
}

impl<T> FromRequest<AppState> for BatchJson<T>
where
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        read(req, state.max_batch_body_bytes, state.body_timeout)
            .await
            .map(BatchJson)
    }
}

/// Reads at most `limit` bytes of body within `deadline` and parses them; a
/// body still incomplete at the deadline is 408 `request_timeout`.
///
/// An oversized body is read on to its end (up to [`DRAIN_BYTES`] /
/// [`DRAIN_TIME`]) before the 413: closing a connection with unread request
/// bytes makes the kernel reset it, and a reset can destroy the 413 before
/// the client reads it.
async fn read<T: DeserializeOwned>(
    req: Request,
    limit: usize,
    deadline: Duration,
) -> Result<T, ApiError> {
    let bytes = tokio::time::timeout(deadline, collect(req, limit))
        .await
        .map_err(|_| ApiError::request_timeout(deadline))??;
    parse(&bytes)
}

/// Collects at most `limit` bytes of body.
async fn collect(req: Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = req.into_body().into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::malformed(format!("The request body could not be read: {e}."))
        })?;
        if bytes.len() + chunk.len() > limit {
            let mut drained = 0usize;
            let _ = tokio::time::timeout(DRAIN_TIME, async {
                while let Some(Ok(chunk)) = body.next().await {
                    drained += chunk.len();
                    if drained > DRAIN_BYTES {
                        break;
                    }
                }
            })
            .await;
            return Err(ApiError::too_large(limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// A whole body parsed as JSON into `T`; bad JSON or wrong types are 400
/// `malformed_request` with serde's explanation.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::malformed(format!("The request body is not valid: {e}.")))
}
