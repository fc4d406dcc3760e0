//! The error envelope: every non-2xx body is
//! `{"error": {"code": "<stable_snake_case>", "message": "<sentence>"}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::compliance::Refusal;
use crate::queue::{EnqueueError, StoreError};

/// An API error: HTTP status, stable code and human sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine code.
    pub code: &'static str,
    /// Human-readable sentence.
    pub message: String,
    /// Seconds for a `Retry-After` header (429/503).
    pub retry_after: Option<u32>,
}

/// The error code of a response, left in its extensions so the rejection
/// counter can read it without parsing the body.
#[derive(Clone, Copy, Debug)]
pub struct ErrorCode(pub &'static str);

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 `malformed_request`.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_request", message)
    }

    /// 413 `payload_too_large`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("The request body is larger than {limit} bytes."),
        )
    }

    /// 408 `request_timeout`: the body did not arrive in time. The answer
    /// closes the connection.
    pub fn request_timeout(waited: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            super::server::REQUEST_TIMEOUT,
            format!(
                "The request body did not arrive within {} s.",
                waited.as_secs()
            ),
        )
    }

    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "A valid API key is required: Authorization: Bearer <key>.",
        )
    }

    /// 404 `not_found`.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("No such {what}."),
        )
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "This route does not support that HTTP method.",
        )
    }

    /// 403 `forbidden`.
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "This endpoint needs an admin account's key.",
        )
    }

    /// 422 `rules_invalid`: the countries file was refused; the old rules stay.
    pub fn rules_invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "rules_invalid", message)
    }

    /// 409 `idempotency_conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "idempotency_conflict", message)
    }

    /// 422 `idempotency_mismatch`: the key was first used with another body.
    pub fn idempotency_mismatch() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_mismatch",
            "This Idempotency-Key was first used with a different request; nothing was sent. \
             Use a new key for a new request.",
        )
    }

    /// 429 `rate_limited`: over the account's messages-per-second limit.
    pub fn rate_limited(account: &str, wait: std::time::Duration) -> Self {
        let secs = retry_after_secs(wait);
        Self {
            retry_after: Some(secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "Account {account} is over its rate limit; nothing was accepted. Retry in {secs} s."
                ),
            )
        }
    }

    /// 429 `quota_exceeded`: the account's daily quota has fewer than the
    /// request's messages left (it resets at 00:00 UTC).
    pub fn quota_exceeded(account: &str, quota: u64, left: u64, wait: std::time::Duration) -> Self {
        Self {
            retry_after: Some(retry_after_secs(wait)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                format!(
                    "Account {account} has {left} of its daily quota of {quota} messages left; \
                     nothing was accepted. The quota resets at 00:00 UTC."
                ),
            )
        }
    }

    /// 503 `not_ready`.
    pub fn not_ready(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
        }
    }
}

/// Whole seconds for `Retry-After`: rounded up, at least 1.
fn retry_after_secs(wait: std::time::Duration) -> u32 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, r.code(), r.to_string())
    }
}

impl From<EnqueueError> for ApiError {
    fn from(e: EnqueueError) -> Self {
        match e {
            EnqueueError::Overloaded { backlog } => Self {
                retry_after: Some(1),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    format!(
                        "The gateway's queue is full ({backlog} messages waiting). Retry shortly."
                    ),
                )
            },
            EnqueueError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure while serving a request");
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "The message store is unavailable; nothing was accepted. Retry shortly.",
            )
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Envelope {
            error: Body {
                code: self.code,
                message: &self.message,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the request may never come: the connection is done.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp.extensions_mut().insert(ErrorCode(self.code));
        resp
    }
}
