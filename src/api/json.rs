//! A JSON body extractor that speaks the error envelope: any content type is
//! accepted (curl's `-d` sends form-encoded), bad JSON or wrong types are 400
//! `malformed_request` with serde's explanation, an oversized body is 413.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;

/// A request body parsed as JSON into `T` (at most `http.max_body_bytes`).
pub struct ApiJson<T>(pub T);

/// A `POST /v1/messages/batch` body parsed as JSON into `T` (at most
/// `http.max_batch_body_bytes`; the route carries that body limit).
pub struct BatchJson<T>(pub T);

impl<T> FromRequest<AppState> for ApiJson<T>
where
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        read(req, state, state.max_body_bytes).await.map(ApiJson)
    }
}

impl<T> FromRequest<AppState> for BatchJson<T>
where
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        read(req, state, state.max_batch_body_bytes)
            .await
            .map(BatchJson)
    }
}

/// Reads the body (whose size limit the router's `DefaultBodyLimit` layers
/// enforce; `limit` names it in the 413) and parses it.
async fn read<T: DeserializeOwned>(
    req: Request,
    state: &AppState,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(limit)
        } else {
            ApiError::malformed(format!("The request body could not be read: {rejection}."))
        }
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::malformed(format!("The request body is not valid: {e}.")))
}
