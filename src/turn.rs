//! What every turn reports, shared by the wire protocol ([`crate::chat::protocol`]) and the turn
//! record ([`crate::store`]): why generation stopped, token usage and timings.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model finished its answer.
    Stop,
    /// The answer hit the max-tokens limit.
    Length,
    /// The client (or shutdown) cancelled the turn.
    Cancelled,
    /// The provider's content filter stopped the answer (Azure OpenAI); `answer` is what came
    /// before it.
    ContentFilter,
}

impl FinishReason {
    /// The serde name (metrics and spans use it).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Cancelled => "cancelled",
            Self::ContentFilter => "content_filter",
        }
    }
}

/// Token counts reported by the model (null when the endpoint does not report them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: Option<u32>,
    /// Tokens generated.
    pub completion_tokens: Option<u32>,
}

/// Where the turn's time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Timings {
    /// Embedding the question (and its rewritten search query, when there is one).
    pub embed: f64,
    /// Rewriting a follow-up into a standalone search query; absent when there was none (no
    /// history, or `RAGCHAT_QUERY_REWRITE=off`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<f64>,
    /// Searching the index.
    pub retrieve: f64,
    /// From the ask to the first token (null when no token came).
    pub ttft: Option<f64>,
    /// From the first token to the last.
    pub generate: f64,
    /// From the ask to `done`.
    pub total: f64,
}

/// Milliseconds since `since`, to the microsecond.
pub fn ms(since: std::time::Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1e6).round() / 1e3
}
