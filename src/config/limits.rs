//! How much a client may use: sockets, turns, tokens; and the connection hygiene that keeps
//! one client from holding resources it does not use. All limits are per replica.

use std::time::Duration;

use clap::Args;

use super::{ConfigError, invalid};

/// Limits, as given.
#[derive(Debug, Clone, Args)]
pub struct LimitsArgs {
    /// Most open WebSocket sessions on this replica; more get HTTP 503 with Retry-After. Capped
    /// below the process's open-file limit, with headroom for health probes and the backends.
    #[arg(
        long,
        env = "RAGCHAT_MAX_CONNECTIONS",
        default_value_t = 10_000,
        global = true
    )]
    pub max_connections: usize,

    /// Most open sockets per client address; more get HTTP 429 with Retry-After.
    #[arg(
        long,
        env = "RAGCHAT_MAX_SOCKETS_PER_ADDRESS",
        default_value_t = 50,
        global = true
    )]
    pub max_sockets_per_address: usize,

    /// Most open sockets per authenticated principal; more are closed with 4429.
    #[arg(
        long,
        env = "RAGCHAT_MAX_SOCKETS_PER_PRINCIPAL",
        default_value_t = 20,
        global = true
    )]
    pub max_sockets_per_principal: usize,

    /// Turns per minute per principal and per client address (0: no limit); over it, asks get
    /// `rate_limited` with `retry_after_ms`.
    #[arg(
        long,
        env = "RAGCHAT_TURNS_PER_MINUTE",
        default_value_t = 30,
        global = true
    )]
    pub turns_per_minute: u32,

    /// Turns a principal or address may ask at once before the per-minute rate applies.
    #[arg(long, env = "RAGCHAT_TURN_BURST", default_value_t = 10, global = true)]
    pub turn_burst: u32,

    /// Completion tokens per principal per UTC day (0: no limit); once used up, asks get
    /// `rate_limited` until midnight UTC.
    #[arg(
        long,
        env = "RAGCHAT_DAILY_TOKENS",
        default_value_t = 200_000,
        global = true
    )]
    pub daily_tokens: u64,

    /// Most turns streaming at once on this replica (size it to the model's capacity); an ask
    /// beyond it waits RAGCHAT_TURN_QUEUE_MS for a place, then gets `busy`.
    #[arg(
        long,
        env = "RAGCHAT_MAX_CONCURRENT_TURNS",
        default_value_t = 256,
        global = true
    )]
    pub max_concurrent_turns: usize,

    /// How long an ask may wait for a place among the concurrent turns, in milliseconds.
    #[arg(
        long,
        env = "RAGCHAT_TURN_QUEUE_MS",
        default_value_t = 2_000,
        global = true
    )]
    pub turn_queue_ms: u64,

    /// Longest question, in estimated model tokens (any script: see docs/security.md).
    #[arg(
        long,
        env = "RAGCHAT_MAX_QUESTION_TOKENS",
        default_value_t = 1_000,
        global = true
    )]
    pub max_question_tokens: usize,

    /// Longest answer, in seconds, whatever the model does.
    #[arg(
        long,
        env = "RAGCHAT_MAX_ANSWER_SECS",
        default_value_t = 300,
        global = true
    )]
    pub max_answer_secs: u64,

    /// Seconds a client may take to send an HTTP request's headers (slowloris).
    #[arg(
        long,
        env = "RAGCHAT_HEADER_TIMEOUT_SECS",
        default_value_t = 10,
        global = true
    )]
    pub header_timeout_secs: u64,

    /// Seconds a WebSocket frame may take to arrive whole once it has begun.
    #[arg(
        long,
        env = "RAGCHAT_FRAME_TIMEOUT_SECS",
        default_value_t = 10,
        global = true
    )]
    pub frame_timeout_secs: u64,
}

/// Validated limits.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Most WebSocket sessions (before the open-file cap).
    pub max_connections: usize,
    /// Most sockets per client address.
    pub max_sockets_per_address: usize,
    /// Most sockets per principal.
    pub max_sockets_per_principal: usize,
    /// Turns per minute per principal and per address; 0: no limit.
    pub turns_per_minute: u32,
    /// Burst before the rate applies.
    pub turn_burst: u32,
    /// Completion tokens per principal per UTC day; 0: no limit.
    pub daily_tokens: u64,
    /// Most turns at once.
    pub max_concurrent_turns: usize,
    /// Longest wait for a place among them.
    pub turn_queue: Duration,
    /// Longest question, in estimated tokens.
    pub max_question_tokens: usize,
    /// Longest answer.
    pub max_answer: Duration,
    /// Time for an HTTP request's headers.
    pub header_timeout: Duration,
    /// Time for a begun WebSocket frame to finish.
    pub frame_timeout: Duration,
}

impl LimitsArgs {
    /// Checks ranges.
    pub(super) fn validate(self) -> Result<LimitsConfig, ConfigError> {
        let at_least_one = [
            ("RAGCHAT_MAX_CONNECTIONS", self.max_connections),
            (
                "RAGCHAT_MAX_SOCKETS_PER_ADDRESS",
                self.max_sockets_per_address,
            ),
            (
                "RAGCHAT_MAX_SOCKETS_PER_PRINCIPAL",
                self.max_sockets_per_principal,
            ),
            ("RAGCHAT_MAX_CONCURRENT_TURNS", self.max_concurrent_turns),
            ("RAGCHAT_MAX_QUESTION_TOKENS", self.max_question_tokens),
            ("RAGCHAT_TURN_BURST", self.turn_burst as usize),
        ];
        for (var, value) in at_least_one {
            if value == 0 {
                return Err(invalid(var, "must be at least 1"));
            }
        }
        let seconds = [
            ("RAGCHAT_MAX_ANSWER_SECS", self.max_answer_secs, 86_400),
            ("RAGCHAT_HEADER_TIMEOUT_SECS", self.header_timeout_secs, 300),
            ("RAGCHAT_FRAME_TIMEOUT_SECS", self.frame_timeout_secs, 300),
        ];
        for (var, value, most) in seconds {
            if value == 0 || value > most {
                return Err(invalid(var, format!("must be between 1 and {most}")));
            }
        }
        if self.turn_queue_ms > 60_000 {
            return Err(invalid("RAGCHAT_TURN_QUEUE_MS", "must be at most 60000"));
        }
        Ok(LimitsConfig {
            max_connections: self.max_connections,
            max_sockets_per_address: self.max_sockets_per_address,
            max_sockets_per_principal: self.max_sockets_per_principal,
            turns_per_minute: self.turns_per_minute,
            turn_burst: self.turn_burst,
            daily_tokens: self.daily_tokens,
            max_concurrent_turns: self.max_concurrent_turns,
            turn_queue: Duration::from_millis(self.turn_queue_ms),
            max_question_tokens: self.max_question_tokens,
            max_answer: Duration::from_secs(self.max_answer_secs),
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            frame_timeout: Duration::from_secs(self.frame_timeout_secs),
        })
    }
}
