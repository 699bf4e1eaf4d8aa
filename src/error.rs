//! The edge error: what a client sees when something goes wrong, with a stable snake_case code.
//! Every code is in one table ([`ErrorCode`]: its wire name and its HTTP status); module errors
//! convert into [`ApiError`] beside their own enums, and internals never leak into the message.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Stable error codes shared by WebSocket error frames and HTTP JSON bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is malformed or a field is invalid; fix the request.
    BadRequest,
    /// The question, history or prompt is larger than allowed.
    TooLarge,
    /// The frame type (or a binary frame) is not supported.
    Unsupported,
    /// A turn is already running on this socket, or the service or the model is at capacity;
    /// retry later (`retry_after_ms` when known).
    Busy,
    /// This client asked too much: too many turns per minute, today's tokens used up, or too
    /// many sockets; retry after `retry_after_ms`.
    RateLimited,
    /// No valid credential: the upgrade's `Authorization`, or the `auth` frame.
    Unauthorized,
    /// The chat model cannot be reached or failed.
    LlmUnavailable,
    /// The chat model rejected the request.
    LlmError,
    /// The chat provider's content filter blocked the question (Azure OpenAI); rephrase it.
    ContentFilter,
    /// The embedder cannot be reached or failed.
    EmbeddingUnavailable,
    /// The vector index cannot be searched.
    RetrievalUnavailable,
    /// The server is shutting down and takes no new turns.
    ShuttingDown,
    /// Anything else; the server log has the details.
    Internal,
    /// HTTP only: the page's Origin may not open a socket (`RAGCHAT_ALLOWED_ORIGINS`).
    ForbiddenOrigin,
    /// HTTP only: `/health/ready` when a backend is down, the seed ingest is running or the
    /// server is shutting down.
    NotReady,
}

impl ErrorCode {
    /// Every code, for tests and documentation.
    pub const ALL: [ErrorCode; 15] = [
        Self::BadRequest,
        Self::TooLarge,
        Self::Unsupported,
        Self::Busy,
        Self::RateLimited,
        Self::Unauthorized,
        Self::LlmUnavailable,
        Self::LlmError,
        Self::ContentFilter,
        Self::EmbeddingUnavailable,
        Self::RetrievalUnavailable,
        Self::ShuttingDown,
        Self::Internal,
        Self::ForbiddenOrigin,
        Self::NotReady,
    ];

    /// The code as it appears on the wire, and the HTTP status it answers with.
    const fn entry(self) -> (&'static str, StatusCode) {
        match self {
            Self::BadRequest => ("bad_request", StatusCode::BAD_REQUEST),
            Self::TooLarge => ("too_large", StatusCode::PAYLOAD_TOO_LARGE),
            Self::Unsupported => ("unsupported", StatusCode::BAD_REQUEST),
            Self::Busy => ("busy", StatusCode::SERVICE_UNAVAILABLE),
            Self::RateLimited => ("rate_limited", StatusCode::TOO_MANY_REQUESTS),
            Self::Unauthorized => ("unauthorized", StatusCode::UNAUTHORIZED),
            Self::LlmUnavailable => ("llm_unavailable", StatusCode::BAD_GATEWAY),
            Self::LlmError => ("llm_error", StatusCode::BAD_GATEWAY),
            Self::ContentFilter => ("content_filter", StatusCode::UNPROCESSABLE_ENTITY),
            Self::EmbeddingUnavailable => ("embedding_unavailable", StatusCode::BAD_GATEWAY),
            Self::RetrievalUnavailable => ("retrieval_unavailable", StatusCode::BAD_GATEWAY),
            Self::ShuttingDown => ("shutting_down", StatusCode::SERVICE_UNAVAILABLE),
            Self::Internal => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
            Self::ForbiddenOrigin => ("forbidden_origin", StatusCode::FORBIDDEN),
            Self::NotReady => ("not_ready", StatusCode::SERVICE_UNAVAILABLE),
        }
    }

    /// The code as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        self.entry().0
    }

    /// The HTTP status an HTTP response with this code carries.
    pub const fn http_status(self) -> StatusCode {
        self.entry().1
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as a client sees it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable explanation, safe to show to a user.
    pub message: String,
    /// When the client may retry (rate limits), in milliseconds.
    pub retry_after_ms: Option<u64>,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// A `bad_request` error.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// The JSON body of an HTTP error response: `{code, message, retry_after_ms?}`.
    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(ms) = self.retry_after_ms {
            body["retry_after_ms"] = ms.into();
        }
        body
    }
}

/// The HTTP face of the edge error: the code's status, a JSON body, and `Retry-After` (whole
/// seconds, rounded up) when the client may retry.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.code.http_status(), Json(self.body())).into_response();
        if let Some(ms) = self.retry_after_ms
            && let Ok(value) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_wire_name_and_it_is_the_serde_name() {
        let mut names = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let serde_name = serde_json::to_value(code).expect("serialises");
            assert_eq!(serde_name, code.as_str(), "{code:?}");
            assert!(
                names.insert(code.as_str()),
                "{} is used twice",
                code.as_str()
            );
            let back: ErrorCode = serde_json::from_value(serde_name).expect("parses back");
            assert_eq!(back, code);
        }
    }

    #[test]
    fn every_code_is_in_the_protocol_schema() {
        let schema = crate::chat::protocol::json_schema().to_string();
        for code in ErrorCode::ALL {
            assert!(
                schema.contains(&format!("\"{}\"", code.as_str())),
                "{} is missing from docs/protocol.schema.json",
                code.as_str()
            );
        }
    }

    #[tokio::test]
    async fn an_http_error_has_the_code_status_a_json_body_and_retry_after() {
        let error = ApiError {
            retry_after_ms: Some(1500),
            ..ApiError::new(ErrorCode::RateLimited, "slow down")
        };
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let bytes = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"code":"rate_limited","message":"slow down","retry_after_ms":1500})
        );
    }
}
