//! What one turn may take and how it is built.

use clap::{Args, ValueEnum};

use super::{ConfigError, invalid};

/// What one turn may take and how it is built.
#[derive(Debug, Clone, Args)]
pub struct ChatConfig {
    /// Integration-test mode for every socket: no token frames, `done` carries the whole answer
    /// (true/false, 1/0, yes/no, on/off).
    #[arg(long, env = "RAGCHAT_TEST_MODE", default_value = "false", global = true,
          action = clap::ArgAction::Set, value_name = "BOOL",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub test_mode: bool,

    /// Number of chunks retrieved and shown to the model per question.
    #[arg(long, env = "RAGCHAT_TOP_K", default_value_t = 4, global = true)]
    pub top_k: usize,

    /// Longest question accepted, in characters.
    #[arg(
        long,
        env = "RAGCHAT_MAX_QUESTION_CHARS",
        default_value_t = 4000,
        global = true
    )]
    pub max_question_chars: usize,

    /// Most history messages a client may send with one ask.
    #[arg(
        long,
        env = "RAGCHAT_MAX_HISTORY_MESSAGES",
        default_value_t = 50,
        global = true
    )]
    pub max_history_messages: usize,

    /// Longest single history message accepted, in characters.
    #[arg(
        long,
        env = "RAGCHAT_MAX_HISTORY_MESSAGE_CHARS",
        default_value_t = 16000,
        global = true
    )]
    pub max_history_message_chars: usize,

    /// Token budget for conversation history in the prompt; oldest turns are dropped first.
    #[arg(
        long,
        env = "RAGCHAT_HISTORY_TOKENS",
        default_value_t = 512,
        global = true
    )]
    pub history_tokens: usize,

    /// Replaces the built-in system instructions of the grounded prompt.
    #[arg(long, env = "RAGCHAT_SYSTEM_PROMPT", global = true)]
    pub system_prompt: Option<String>,

    /// Follow-up questions: `auto` asks the chat model to rewrite a question that has history
    /// into a standalone search query before retrieval; `off` searches the question as asked.
    #[arg(
        long,
        env = "RAGCHAT_QUERY_REWRITE",
        value_enum,
        default_value = "auto",
        global = true
    )]
    pub query_rewrite: QueryRewrite,

    /// Longest wait for the rewrite, in milliseconds; past it the question is searched as asked.
    #[arg(
        long,
        env = "RAGCHAT_QUERY_REWRITE_TIMEOUT_MS",
        default_value_t = 4000,
        global = true
    )]
    pub query_rewrite_timeout_ms: u64,
}

/// Whether follow-up questions are rewritten into standalone search queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueryRewrite {
    /// Rewrite when the turn has history (one short, non-streamed model call).
    Auto,
    /// Search every question as asked.
    Off,
}

impl ChatConfig {
    /// Checks what clap cannot.
    pub(super) fn validate(&mut self) -> Result<(), ConfigError> {
        if self.top_k == 0 || self.top_k > 50 {
            return Err(invalid("RAGCHAT_TOP_K", "must be between 1 and 50"));
        }
        if self.max_question_chars == 0 {
            return Err(invalid("RAGCHAT_MAX_QUESTION_CHARS", "must be at least 1"));
        }
        if !(100..=60_000).contains(&self.query_rewrite_timeout_ms) {
            return Err(invalid(
                "RAGCHAT_QUERY_REWRITE_TIMEOUT_MS",
                "must be between 100 and 60000",
            ));
        }
        Ok(())
    }
}
