//! Turn records: the record schema, the `RecordStore` trait, its SQLite backend, and the
//! `Recorder` queue that writes records off the streaming path.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::chat::protocol::{Timings, Usage};

pub mod recorder;
pub mod sqlite;

pub use recorder::Recorder;
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

/// A source as recorded: no text, which the index keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordSource {
    /// Number in the prompt.
    pub n: u32,
    /// Index point id.
    pub chunk_id: String,
    /// Document path.
    pub source: String,
    /// Similarity.
    pub score: f32,
}

/// The error that ended a failed turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordError {
    /// Stable code, as sent to the client.
    pub code: String,
    /// Message, as sent to the client.
    pub message: String,
}

/// One JSON record per turn. docs/records.md documents every field; every backend stores this
/// exact JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// The turn id (client's or server-made).
    pub id: String,
    /// The conversation.
    pub conversation_id: String,
    /// Who asked, if the client said.
    pub user: Option<String>,
    /// The question.
    pub question: String,
    /// The answer, partial when cancelled or failed mid-stream.
    pub answer: String,
    /// How the turn ended.
    pub status: TurnStatus,
    /// Why it failed, when it did.
    pub error: Option<RecordError>,
    /// Why generation stopped (`stop`, `length`, `cancelled`), when it did.
    pub finish_reason: Option<String>,
    /// The sources shown to the model.
    pub sources: Vec<RecordSource>,
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
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed.
    #[error("record store: {0}")]
    Backend(String),
}

/// Where turn records are kept.
#[async_trait]
pub trait RecordStore: Send + Sync {
    /// Inserts or replaces the record with this id (idempotent).
    async fn put(&self, record: &TurnRecord) -> Result<(), StoreError>;

    /// The record with this id.
    async fn get(&self, id: &str) -> Result<Option<TurnRecord>, StoreError>;

    /// The most recent `n` records, newest first.
    async fn recent(&self, n: usize) -> Result<Vec<TurnRecord>, StoreError>;

    /// A short description for `/health`.
    fn describe(&self) -> String;

    /// Cheap liveness probe for readiness.
    async fn ping(&self) -> Result<(), StoreError>;
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
