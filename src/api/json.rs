//! A JSON body extractor that speaks the error envelope: any content type is
//! accepted (curl's `-d` sends form-encoded), bad JSON or wrong types are 400
//! `malformed_request` with serde's explanation, an oversized body is 413.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;

/// A request body parsed as JSON into `T`.
pub struct ApiJson<T>(pub T);

impl<T> FromRequest<AppState> for ApiJson<T>
where
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(state.max_body_bytes)
            } else {
                ApiError::malformed(format!("The request body could not be read: {rejection}."))
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::malformed(format!("The request body is not valid: {e}.")))
    }
}
