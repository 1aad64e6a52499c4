//! The server's error type and its one mapping to HTTP: a status and a JSON body
//! `{"error": {"code", "message"}}`. 4xx say precisely what is wrong; 5xx are logged and say
//! nothing internal.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request body or a parameter is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// Wrong username or password (one answer for both), or no valid credentials: a code and
    /// a message.
    #[error("{1}")]
    Unauthorized(&'static str, String),
    /// A pull cursor this server did not issue, or one ahead of everything it holds (its
    /// database was restored from a backup): the device pulls from the start.
    #[error("{0}")]
    BadCursor(String),
    /// A pull cursor below what the server compacted away: the device bootstraps again.
    #[error("{0}")]
    CursorExpired(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// It exists already.
    #[error("{0}")]
    Conflict(String),
    /// The request body is larger than the server accepts.
    #[error("{0}")]
    TooLarge(String),
    /// Too many failed attempts; retry after this many seconds.
    #[error(
        "尝试次数过多，请约 {} 分钟后再试 / too many failed attempts: try again in about {} minute(s)",
        .0.div_ceil(60),
        .0.div_ceil(60)
    )]
    Throttled(u64),
    /// The caller has as many requests of this kind under way as it may: try again in a second.
    #[error("{0}")]
    Busy(String),
    /// The request's body came in an encoding this route does not read.
    #[error("{0}")]
    Encoding(String),
    /// The request's body did not arrive in time, or its answer took too long to prepare.
    #[error(
        "请求未能及时送达，请重试 / the request did not arrive in time (or its answer took too long): send it again"
    )]
    TimedOut,
    /// The server is starting (opening, perhaps migrating, its database): try again shortly.
    #[error("the server is starting: try again shortly")]
    Starting,
    /// The server cannot serve now (its database does not answer).
    #[error("{0}")]
    Unavailable(String),
    /// A failure inside the server.
    #[error("internal: {0}")]
    Internal(String),
}

impl AppError {
    /// A body past the size limit.
    pub fn too_large() -> AppError {
        AppError::TooLarge("request body too large".into())
    }

    /// The stable code and HTTP status of this error.
    fn code_and_status(&self) -> (&'static str, StatusCode) {
        match self {
            AppError::BadRequest(_) => ("bad_request", StatusCode::BAD_REQUEST),
            AppError::Unauthorized(code, _) => (code, StatusCode::UNAUTHORIZED),
            AppError::BadCursor(_) => (baylink_sync::wire::BAD_CURSOR, StatusCode::BAD_REQUEST),
            AppError::CursorExpired(_) => (baylink_sync::wire::CURSOR_EXPIRED, StatusCode::GONE),
            AppError::Forbidden(_) => ("forbidden", StatusCode::FORBIDDEN),
            AppError::NotFound(_) => ("not_found", StatusCode::NOT_FOUND),
            AppError::Conflict(_) => ("conflict", StatusCode::CONFLICT),
            AppError::TooLarge(_) => ("too_large", StatusCode::PAYLOAD_TOO_LARGE),
            AppError::Throttled(_) => ("throttled", StatusCode::TOO_MANY_REQUESTS),
            AppError::Busy(_) => (baylink_sync::wire::BUSY, StatusCode::TOO_MANY_REQUESTS),
            AppError::Encoding(_) => ("unsupported_encoding", StatusCode::UNSUPPORTED_MEDIA_TYPE),
            AppError::TimedOut => ("timeout", StatusCode::REQUEST_TIMEOUT),
            AppError::Starting => ("starting", StatusCode::SERVICE_UNAVAILABLE),
            AppError::Unavailable(_) => ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
            AppError::Internal(_) => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

impl From<crate::store::error::StoreError> for AppError {
    fn from(e: crate::store::error::StoreError) -> AppError {
        use crate::store::error::StoreError;
        match e {
            StoreError::NotFound(m) => AppError::NotFound(m),
            StoreError::Forbidden(m) => AppError::Forbidden(m),
            StoreError::Invalid(m) => AppError::BadRequest(m),
            StoreError::Conflict(m) => AppError::Conflict(m),
            StoreError::Backend(m) => AppError::Internal(m),
            StoreError::Busy(m) => AppError::Unavailable(m),
            StoreError::Expired(m) => AppError::CursorExpired(m),
        }
    }
}

impl From<rusqlite::Error> for AppError {
    fn from(e: rusqlite::Error) -> AppError {
        AppError::Internal(format!("sqlite: {e}"))
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (code, status) = self.code_and_status();
        let message = match &self {
            AppError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let body = json!({ "error": { "code": code, "message": message } });
        let mut response = (status, axum::Json(body)).into_response();
        let retry_after = match self {
            AppError::Throttled(seconds) => Some(seconds),
            AppError::Busy(_) => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}
