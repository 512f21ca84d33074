//! [`ApiError`]: every error answer of the server, `{"code", "message"}` (the shape
//! Segment's libraries read), with its status and code from one table ([`ErrorKind`]),
//! which also writes the error responses of `/openapi.json` and is checked against the
//! table in docs/api.md. An internal failure is logged with its cause and answered with
//! a generic message: store errors and paths never reach a client.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use microseg_store::StoreError;

/// What went wrong, as a client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A malformed call or body; the message names the field.
    InvalidRequest,
    /// A missing or unknown key.
    Unauthorized,
    /// No such segment, profile, webhook or endpoint.
    NotFound,
    /// The endpoint exists, not with this method.
    MethodNotAllowed,
    /// It already exists.
    Conflict,
    /// Over the size limits.
    PayloadTooLarge,
    /// Over a workspace limit (distinct trait or event names).
    LimitReached,
    /// The key sent more than its rate (answered with `Retry-After`).
    RateLimited,
    /// The write queue is full (answered with `Retry-After`).
    Overloaded,
    /// The server is stopping.
    ShuttingDown,
    /// A channel's relay (SMTP server, webhook receiver) refused or did not answer.
    BadGateway,
    /// Anything else; the cause is in the server's log.
    Internal,
}

impl ErrorKind {
    /// Every kind, in the order of the table.
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::InvalidRequest,
        ErrorKind::Unauthorized,
        ErrorKind::NotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::Conflict,
        ErrorKind::PayloadTooLarge,
        ErrorKind::LimitReached,
        ErrorKind::RateLimited,
        ErrorKind::Overloaded,
        ErrorKind::ShuttingDown,
        ErrorKind::BadGateway,
        ErrorKind::Internal,
    ];

    /// The one table: HTTP status, stable code, and what it means.
    pub fn describe(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ErrorKind::InvalidRequest => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Malformed: the message names the field and what is wrong.",
            ),
            ErrorKind::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Missing or unknown key.",
            ),
            ErrorKind::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "No such segment, profile, webhook or endpoint.",
            ),
            ErrorKind::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "The endpoint does not take this method.",
            ),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict", "It already exists."),
            ErrorKind::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Over Segment's limits: 32 KB per call, 500 KB per request.",
            ),
            ErrorKind::LimitReached => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "limit_reached",
                "Over a workspace limit (`[limits]`: distinct trait or event names); nothing of the request was stored.",
            ),
            ErrorKind::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "The key sent more than its rate (`[server]`): retry after `Retry-After` seconds.",
            ),
            ErrorKind::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "The write queue is full: retry after `Retry-After` seconds.",
            ),
            ErrorKind::ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "The server is stopping.",
            ),
            ErrorKind::BadGateway => (
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "A channel's relay (SMTP server, webhook receiver) refused the message or did not answer; the message says which and why.",
            ),
            ErrorKind::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "The server failed; nothing of the request was stored. The cause is in its log.",
            ),
        }
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        self.describe().0
    }

    /// The stable code.
    pub fn code(self) -> &'static str {
        self.describe().1
    }
}

/// An error answer: a kind and a message for the client.
#[derive(Debug)]
pub struct ApiError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// What the client reads (for [`ErrorKind::Internal`], what the log reads).
    pub message: String,
    /// Seconds for `Retry-After` (1 when unset for the kinds that send it).
    pub retry_after: Option<u64>,
}

/// The body of every error answer.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub(crate) struct ErrorBody {
    /// `invalid_request`, `unauthorized`, `not_found`, `method_not_allowed`, `conflict`,
    /// `payload_too_large`, `limit_reached`, `rate_limited`, `overloaded`,
    /// `shutting_down`, `bad_gateway` or `internal`.
    code: String,
    /// What is wrong, naming the field when there is one.
    message: String,
}

impl ApiError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A malformed request.
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::InvalidRequest, message)
    }

    /// Something that does not exist.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::NotFound, message)
    }

    /// A failure of the server itself; `cause` goes to the log only.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        ApiError::new(ErrorKind::Internal, cause.to_string())
    }

    /// The server is stopping.
    pub fn shutting_down() -> ApiError {
        ApiError::new(ErrorKind::ShuttingDown, "the server is stopping")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::UnknownProfile(id) => ApiError::not_found(format!("no profile '{id}'")),
            StoreError::Eval(e) => ApiError::bad(e.to_string()),
            StoreError::Refused(message) => ApiError::bad(message),
            StoreError::NotFound(message) => ApiError::not_found(message),
            e => ApiError::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, _) = self.kind.describe();
        let message = match self.kind {
            ErrorKind::Internal => {
                tracing::error!(error = %self.message, "request failed");
                "the server failed to answer; the cause is in its log".to_string()
            }
            _ => self.message,
        };
        let body = ErrorBody {
            code: code.to_string(),
            message,
        };
        let mut response = (status, axum::Json(body)).into_response();
        if matches!(self.kind, ErrorKind::Overloaded | ErrorKind::RateLimited) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(self.retry_after.unwrap_or(1)),
            );
        }
        response
    }
}

/// A query string, refused with an [`ApiError`] naming what is wrong.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e: QueryRejection| ApiError::bad(format!("query: {}", e.body_text())))
    }
}

/// A path parameter, refused with an [`ApiError`] naming what is wrong.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e: PathRejection| ApiError::bad(format!("path: {}", e.body_text())))
    }
}

/// A request body as bytes, refused with an [`ApiError`] when too large or unreadable.
pub struct Body(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::body::Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|e: BytesRejection| {
                let kind = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ErrorKind::PayloadTooLarge
                } else {
                    ErrorKind::InvalidRequest
                };
                ApiError::new(kind, format!("body: {}", e.body_text()))
            })
    }
}

/// The answer to an unknown path.
pub(crate) async fn no_route() -> ApiError {
    ApiError::not_found("no such endpoint (see /openapi.json)")
}

/// The answer to a known path with a method it does not take.
pub(crate) async fn wrong_method() -> ApiError {
    ApiError::new(
        ErrorKind::MethodNotAllowed,
        "this endpoint does not take this method (see /openapi.json)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/api.md's table of errors is this one: every kind with its status and code,
    /// in order, and nothing else.
    #[test]
    fn the_documented_error_table_is_the_kinds_table() {
        let doc = include_str!("../../../docs/api.md");
        let table = doc
            .split("\n## Errors\n")
            .nth(1)
            .expect("docs/api.md has an Errors section");
        let rows: Vec<(u16, String)> = table
            .lines()
            .skip_while(|l| !l.starts_with("| status"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (
                    cells[1].parse().expect("a status"),
                    cells[2].trim_matches('`').to_string(),
                )
            })
            .collect();
        let kinds: Vec<(u16, String)> = ErrorKind::ALL
            .iter()
            .map(|k| (k.status().as_u16(), k.code().to_string()))
            .collect();
        assert_eq!(rows, kinds);
    }

    #[test]
    fn internal_errors_do_not_reach_the_client() {
        let e = ApiError::from(StoreError::Invalid(
            "store: profile ids are not dense (expected 3, found 9) in /secret/path".into(),
        ));
        assert_eq!(e.kind, ErrorKind::Internal);
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = futures_util::FutureExt::now_or_never(axum::body::to_bytes(
            response.into_body(),
            1 << 16,
        ))
        .expect("ready")
        .expect("body");
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            !text.contains("secret") && text.contains("\"internal\""),
            "{text}"
        );
    }
}
