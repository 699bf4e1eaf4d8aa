//! The chat model: the `ChatModel` trait (a stream of answer pieces) and the OpenAI-compatible
//! backend (OpenAI, Azure OpenAI, llama-server, Ollama, vLLM).

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::Serialize;

use crate::error::{ApiError, ErrorCode};

pub mod openai;

pub use openai::OpenAiChat;

/// One message of the prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: &'static str,
    /// Text.
    pub content: String,
}

/// What the model sends while it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatEvent {
    /// The next piece of the answer.
    Token(String),
    /// Generation ended; `length` when it hit the token limit.
    Finish(String),
    /// Token counts, whenever the endpoint reports them.
    Usage {
        /// Prompt tokens.
        prompt_tokens: Option<u32>,
        /// Generated tokens.
        completion_tokens: Option<u32>,
    },
}

/// Why the model failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// Unreachable, timed out, failed mid-stream or answered 5xx.
    #[error("chat model unavailable: {0}")]
    Unavailable(String),
    /// Rate limited (HTTP 429).
    #[error("chat model rate limited: {message}")]
    RateLimited {
        /// What the endpoint said.
        message: String,
        /// When to retry, if the endpoint said.
        retry_after_ms: Option<u64>,
    },
    /// The prompt does not fit the model's context.
    #[error("prompt too large for the model: {0}")]
    ContextOverflow(String),
    /// The endpoint rejected the request (4xx).
    #[error("chat model rejected the request: {0}")]
    Rejected(String),
}

impl From<LlmError> for ApiError {
    fn from(e: LlmError) -> Self {
        match e {
            LlmError::Unavailable(_) => ApiError::new(
                ErrorCode::LlmUnavailable,
                "the language model is unavailable; try again shortly",
            ),
            LlmError::RateLimited { retry_after_ms, .. } => ApiError {
                code: ErrorCode::Busy,
                message: "the language model is busy; retry later".into(),
                retry_after_ms,
            },
            LlmError::ContextOverflow(_) => ApiError::new(
                ErrorCode::TooLarge,
                "the question, history and sources do not fit the model's context; \
                 shorten the question or the history",
            ),
            LlmError::Rejected(msg) => ApiError::new(
                ErrorCode::LlmError,
                format!("the language model refused: {msg}"),
            ),
        }
    }
}

/// A stream of answer pieces; dropping it drops the upstream request.
pub type ChatStream = BoxStream<'static, Result<ChatEvent, LlmError>>;

/// A chat model that streams its answer.
#[async_trait]
pub trait ChatModel: Send + Sync {
    /// Starts generating an answer to `messages`.
    async fn stream(&self, messages: Vec<ChatMessage>) -> Result<ChatStream, LlmError>;

    /// The model name, for records.
    fn model(&self) -> &str;

    /// Cheap liveness probe for readiness.
    async fn ping(&self) -> Result<(), LlmError>;
}
