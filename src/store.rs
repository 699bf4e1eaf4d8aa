//! Turn records: the record schema, the `RecordStore` trait with its SQLite and Cosmos DB
//! backends, and the `Recorder` that writes records off the streaming path, retries, and spools
//! to disk what the store cannot take yet.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::turn::{FinishReason, Timings, Usage};

pub mod cosmos;
pub mod journal;
pub mod recorder;
pub mod spool;
pub mod sqlite;

pub use cosmos::CosmosStore;
pub use journal::Journal;
pub use recorder::{Recorder, RecorderState, RecorderStatus, RecorderTask, RetryPolicy};
pub use spool::Spool;
pub use sqlite::SqliteStore;

/// How a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnStatus {
    /// The model finished (stop or length).
    Completed,
    /// The client or shutdown cancelled it; `answer` holds the partial answer.
    Cancelled,
    /// An error ended it; `error` says which.
    Failed,
}

impl TurnStatus {
    /// The serde name (metrics and spans use it).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }
}

/// A source as recorded: no text, which the index keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordSource {
    /// Number in the prompt.
    pub n: u32,
    /// Index point id.
    pub chunk_id: String,
    /// Document path.
    pub source: String,
    /// The PDF page the chunk starts on (absent for other documents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// Similarity, to 6 decimals (a 64-bit number, so every store and reader sees the same
    /// digits).
    pub score: f64,
}

/// The error that ended a failed turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordError {
    /// Stable code, as sent to the client.
    pub code: ErrorCode,
    /// Message, as sent to the client.
    pub message: String,
}

/// A user's rating of an answer (`feedback` frame), kept on the turn's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnFeedback {
    /// `up` or `down`.
    pub rating: crate::chat::protocol::Rating,
    /// The user's comment, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// When it was given (RFC 3339, UTC); a later rating replaces an earlier one.
    pub at: String,
}

/// One JSON record per turn. docs/records.md documents every field; every backend stores this
/// exact JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// The turn id (client's or server-made).
    pub id: String,
    /// The conversation.
    pub conversation_id: String,
    /// Who asked: the authenticated principal (`key:NAME`, `jwt:SUBJECT`, `easyauth:ID`), or,
    /// when the service needs no authentication, what the client said (if anything).
    pub user: Option<String>,
    /// What the client said it is, beside an authenticated principal (never trusted). Absent
    /// when the service needs no authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_user: Option<String>,
    /// The question.
    pub question: String,
    /// The answer, partial when cancelled or failed mid-stream.
    pub answer: String,
    /// How the turn ended.
    pub status: TurnStatus,
    /// Why it failed, when it did.
    pub error: Option<RecordError>,
    /// Why generation stopped, when it did.
    pub finish_reason: Option<FinishReason>,
    /// The sources shown to the model.
    pub sources: Vec<RecordSource>,
    /// What was searched: the question, or a follow-up's standalone rewrite. Absent when the
    /// turn ended before searching, and in records written by earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_query: Option<String>,
    /// Source numbers the answer cites.
    pub citations: Vec<u32>,
    /// Model name.
    pub model: String,
    /// Token counts.
    pub usage: Usage,
    /// Timings, in milliseconds.
    pub timings_ms: Timings,
    /// When the ask arrived (RFC 3339, UTC).
    pub created_at: String,
    /// When the turn ended (RFC 3339, UTC).
    pub completed_at: String,
    /// ragchat version that served the turn.
    pub app_version: String,
    /// The turn's OpenTelemetry trace id, as its `done` (or `error`) frame said. Absent in
    /// records written before 0.2 and by a build without tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The user's rating of the answer, once given (absent until then, and in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<TurnFeedback>,
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Worth retrying: throttled (429), timed out, unreachable, 5xx, or not authorised yet.
    #[error("record store unavailable: {message}")]
    Transient {
        /// What happened.
        message: String,
        /// How long the store asked us to wait (Cosmos `x-ms-retry-after-ms`).
        retry_after: Option<std::time::Duration>,
    },
    /// The store refused this record for good (e.g. malformed or too large); retrying cannot
    /// help.
    #[error("record store refused the record: {0}")]
    Rejected(String),
    /// The store is set up wrongly (missing container, wrong partition key, bad credentials at
    /// start); the message says how to fix it.
    #[error("{0}")]
    Misconfigured(String),
}

impl StoreError {
    /// A transient error without a retry hint.
    pub fn transient(message: impl std::fmt::Display) -> Self {
        Self::Transient {
            message: message.to_string(),
            retry_after: None,
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }
}

/// Where turn records are kept: what the record path and a turn need.
#[async_trait]
pub trait RecordStore: Send + Sync {
    /// Inserts or replaces the record with this id (idempotent: a replay never duplicates).
    async fn put(&self, record: &TurnRecord) -> Result<(), StoreError>;

    /// The newest `n` records of a conversation, newest first.
    async fn conversation(
        &self,
        conversation_id: &str,
        n: usize,
    ) -> Result<Vec<TurnRecord>, StoreError>;

    /// A short description for `/health` (no secrets).
    fn describe(&self) -> String;

    /// Readiness probe: the store answers and is set up as expected.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Listing across conversations, when the backend can (`ragchat records`).
    fn listing(&self) -> Option<&dyn RecordListing> {
        None
    }
}

/// A store that can list its newest records across conversations.
#[async_trait]
pub trait RecordListing: Send + Sync {
    /// The most recent `n` records across conversations, newest first.
    async fn recent(&self, n: usize) -> Result<Vec<TurnRecord>, StoreError>;
}

/// Now, as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    // Fixed width (always three fractional digits, always `Z`), so the strings sort as times.
    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(FORMAT)
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small completed record.
    pub(crate) fn record(conversation_id: &str, id: &str) -> TurnRecord {
        TurnRecord {
            id: id.into(),
            conversation_id: conversation_id.into(),
            user: None,
            client_user: None,
            question: format!("question {id}"),
            answer: format!("answer {id}"),
            status: TurnStatus::Completed,
            error: None,
            finish_reason: Some(FinishReason::Stop),
            sources: Vec::new(),
            search_query: None,
            citations: Vec::new(),
            model: "m".into(),
            usage: Usage::default(),
            timings_ms: Timings::default(),
            created_at: now_rfc3339(),
            completed_at: now_rfc3339(),
            app_version: "test".into(),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            feedback: None,
        }
    }

    /// The records of each status as an earlier version stored them (made by the version
    /// before the record was typed): reading and writing them again gives the same bytes.
    pub(crate) const STORED: [(&str, &str); 3] = [
        (
            "completed",
            include_str!("../tests/fixtures/records/completed.json"),
        ),
        (
            "cancelled",
            include_str!("../tests/fixtures/records/cancelled.json"),
        ),
        (
            "failed",
            include_str!("../tests/fixtures/records/failed.json"),
        ),
    ];

    #[test]
    fn stored_records_read_and_write_back_byte_for_byte() {
        for (status, json) in STORED {
            let record: TurnRecord = serde_json::from_str(json).expect(status);
            assert_eq!(
                serde_json::to_string(&record).expect("json"),
                json.trim_end(),
                "{status}"
            );
            let expected = serde_json::Value::String(status.to_owned());
            assert_eq!(serde_json::to_value(record.status).expect("json"), expected);
        }
    }

    #[test]
    fn timestamps_are_fixed_width_utc() {
        let t = now_rfc3339();
        assert_eq!(t.len(), "2026-01-01T00:00:00.000Z".len(), "{t}");
        assert!(t.ends_with('Z'));
    }
}
