//! The edge error: what a client sees when something goes wrong, with a stable snake_case code.
//! Module errors convert into it; internals never leak into the message.

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
    /// A turn is already running on this socket, or the model is rate limited; retry later.
    Busy,
    /// The chat model cannot be reached or failed.
    LlmUnavailable,
    /// The chat model rejected the request.
    LlmError,
    /// The embedder cannot be reached or failed.
    EmbeddingUnavailable,
    /// The vector index cannot be searched.
    RetrievalUnavailable,
    /// The server is shutting down and takes no new turns.
    ShuttingDown,
    /// Anything else; the server log has the details.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::TooLarge => "too_large",
            Self::Unsupported => "unsupported",
            Self::Busy => "busy",
            Self::LlmUnavailable => "llm_unavailable",
            Self::LlmError => "llm_error",
            Self::EmbeddingUnavailable => "embedding_unavailable",
            Self::RetrievalUnavailable => "retrieval_unavailable",
            Self::ShuttingDown => "shutting_down",
            Self::Internal => "internal",
        }
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
}
