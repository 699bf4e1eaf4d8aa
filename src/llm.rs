//! The chat model: the `ChatModel` trait (a stream of answer pieces), the rules every streamed
//! answer follows whatever the backend (which finish reasons exist; an answer that ends without
//! one was cut off), and the OpenAI-compatible backend (OpenAI, Azure OpenAI, llama-server,
//! Ollama, vLLM).

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Serialize;

use crate::error::{ApiError, ErrorCode};
use crate::turn::FinishReason;

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
    /// Generation ended (`stop`, `length` or `content_filter`; never `cancelled`, which only a
    /// client causes).
    Finish(FinishReason),
    /// Token counts, whenever the endpoint reports them.
    Usage {
        /// Prompt tokens.
        prompt_tokens: Option<u32>,
        /// Generated tokens.
        completion_tokens: Option<u32>,
    },
}

/// A finish reason as an OpenAI-compatible endpoint names it: `length` means the answer hit the
/// token limit, `content_filter` that the provider's filter stopped it (Azure OpenAI, OpenAI);
/// every other reason (`stop`, `eos`, `tool_calls`, …) means the model ended it.
pub fn finish_reason(wire: &str) -> FinishReason {
    match wire {
        "length" => FinishReason::Length,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// Why the model failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// Unreachable, timed out, failed mid-stream or answered 5xx.
    #[error("chat model unavailable: {0}")]
    Unavailable(String),
    /// Rate limited (HTTP 429), or at capacity (HTTP 503 other than a model still loading).
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
    /// The provider's content filter refused the prompt (Azure OpenAI: HTTP 400 with code
    /// `content_filter`).
    #[error("chat model's content filter refused the prompt: {0}")]
    ContentFiltered(String),
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
            // The provider's own words stay in the log: they may name keys, deployments or
            // quotas ("Incorrect API key provided: sk-…").
            LlmError::Rejected(_) => ApiError::new(
                ErrorCode::LlmError,
                "the language model refused the request; the server log has the details",
            ),
            LlmError::ContentFiltered(_) => ApiError::new(
                ErrorCode::ContentFilter,
                "the language model's content filter blocked this question; rephrase it",
            ),
        }
    }
}

/// An answer being streamed; dropping it drops the upstream request.
///
/// Whatever the backend, an answer ends with a [`ChatEvent::Finish`] (usage may follow it) or
/// an error: one that just stops was cut off, and [`ChatStream::next`] says so.
pub struct ChatStream {
    events: BoxStream<'static, Result<ChatEvent, LlmError>>,
    finished: bool,
    ended: bool,
}

impl ChatStream {
    /// Wraps a backend's events.
    pub fn new(events: BoxStream<'static, Result<ChatEvent, LlmError>>) -> Self {
        Self {
            events,
            finished: false,
            ended: false,
        }
    }

    /// The next event; an error ends the answer; `None` once it has ended.
    pub async fn next(&mut self) -> Option<Result<ChatEvent, LlmError>> {
        if self.ended {
            return None;
        }
        match self.events.next().await {
            Some(Ok(event)) => {
                self.finished |= matches!(event, ChatEvent::Finish(_));
                Some(Ok(event))
            }
            Some(Err(e)) => {
                self.ended = true;
                Some(Err(e))
            }
            None => {
                self.ended = true;
                (!self.finished).then(|| {
                    Err(LlmError::Unavailable(
                        "the answer ended without a finish reason (cut off)".into(),
                    ))
                })
            }
        }
    }
}

/// A chat model that streams its answer.
#[async_trait]
pub trait ChatModel: Send + Sync {
    /// Starts generating an answer to `messages`.
    async fn stream(&self, messages: Vec<ChatMessage>) -> Result<ChatStream, LlmError>;

    /// A short answer in one piece, not streamed (the follow-up query rewrite): at most
    /// `max_tokens`, at temperature 0, within `timeout` from sending to the whole answer.
    async fn complete(
        &self,
        messages: Vec<ChatMessage>,
        max_tokens: u32,
        timeout: std::time::Duration,
    ) -> Result<String, LlmError>;

    /// The model name, for records.
    fn model(&self) -> &str;

    /// A short description for `/health`: endpoint (scheme, host, port) and model.
    fn describe(&self) -> String;

    /// Cheap liveness probe for readiness.
    async fn ping(&self) -> Result<(), LlmError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn drain(events: Vec<Result<ChatEvent, LlmError>>) -> Vec<Result<ChatEvent, LlmError>> {
        let mut stream = ChatStream::new(futures::stream::iter(events).boxed());
        let mut out = Vec::new();
        while let Some(e) = stream.next().await {
            out.push(e);
        }
        out
    }

    #[tokio::test]
    async fn an_answer_that_stops_without_a_finish_reason_was_cut_off() {
        let out = drain(vec![Ok(ChatEvent::Token("Par".into()))]).await;
        assert_eq!(out.len(), 2);
        assert!(
            matches!(&out[1], Err(LlmError::Unavailable(m)) if m.contains("cut off")),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn usage_may_follow_the_finish_reason() {
        let usage = ChatEvent::Usage {
            prompt_tokens: Some(3),
            completion_tokens: Some(1),
        };
        let out = drain(vec![
            Ok(ChatEvent::Token("Paris".into())),
            Ok(ChatEvent::Finish(FinishReason::Stop)),
            Ok(usage.clone()),
        ])
        .await;
        assert_eq!(out.last(), Some(&Ok(usage)));
        assert_eq!(out.len(), 3);
    }

    #[tokio::test]
    async fn nothing_follows_an_error() {
        let out = drain(vec![
            Err(LlmError::Unavailable("gone".into())),
            Ok(ChatEvent::Token("late".into())),
        ])
        .await;
        assert_eq!(out, vec![Err(LlmError::Unavailable("gone".into()))]);
    }

    #[test]
    fn only_length_means_the_limit_was_hit() {
        assert_eq!(finish_reason("length"), FinishReason::Length);
        assert_eq!(finish_reason("content_filter"), FinishReason::ContentFilter);
        for other in ["stop", "eos", "tool_calls", ""] {
            assert_eq!(finish_reason(other), FinishReason::Stop, "{other}");
        }
    }
}
