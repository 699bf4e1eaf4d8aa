//! Retrieval: the `VectorIndex` trait over the service's own chunk types, and its backends:
//! the embedded Qdrant Edge engine (the default, one process) and a Qdrant server (shared by
//! every replica). Both hold a dense and a BM25 vector per chunk and answer dense or hybrid
//! (RRF-fused) queries.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub mod bm25;
pub mod edge;
pub mod qdrant;
pub mod transfer;

pub use bm25::Bm25;
pub use edge::EdgeIndex;
pub use qdrant::QdrantIndex;

use crate::config::RetrievalMode;
use crate::error::{ApiError, ErrorCode};

/// Why an index operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The index cannot be opened as configured (e.g. its vector size differs from the
    /// embedder's).
    #[error("{0}")]
    Open(String),
    /// The engine failed an operation.
    #[error("index operation failed: {0}")]
    Engine(String),
}

/// What each point carries besides its vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkPayload {
    /// Path of the document, as ingested.
    pub source: String,
    /// Title of the document.
    pub title: String,
    /// Position of the chunk in the document, from 0.
    pub chunk_index: u32,
    /// The chunk's text.
    pub text: String,
    /// sha256 of the whole document, to skip unchanged files on re-ingest.
    pub doc_hash: String,
    /// The page of a PDF the chunk starts on, from 1 (absent for other documents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// When the document was ingested (RFC 3339, UTC); absent in chunks of older indexes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingested_at: Option<String>,
}

/// An indexed document, as `ragchat index sources` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexedSource {
    /// Its name in sources and citations.
    pub source: String,
    /// Its chunks in the index.
    pub chunks: usize,
    /// When it was last ingested, if the index knows.
    pub ingested_at: Option<String>,
}

/// The two payload fields a listing of documents reads.
#[derive(Debug, Deserialize)]
struct SourceEntry {
    source: String,
    #[serde(default)]
    ingested_at: Option<String>,
}

/// Counts chunks per document, from their payloads (JSON objects with `source` and, in newer
/// indexes, `ingested_at`); sorted by source.
fn tally(
    into: &mut std::collections::BTreeMap<String, IndexedSource>,
    payload: serde_json::Value,
) -> Result<(), IndexError> {
    let entry: SourceEntry = serde_json::from_value(payload)
        .map_err(|e| IndexError::Engine(format!("unexpected payload: {e}")))?;
    let doc = into
        .entry(entry.source.clone())
        .or_insert_with(|| IndexedSource {
            source: entry.source,
            chunks: 0,
            ingested_at: None,
        });
    doc.chunks += 1;
    if entry.ingested_at > doc.ingested_at {
        doc.ingested_at = entry.ingested_at;
    }
    Ok(())
}

/// A chunk ready to upsert.
#[derive(Debug, Clone)]
pub struct ChunkPoint {
    /// Deterministic id: [`chunk_id`] of source and index.
    pub id: Uuid,
    /// Unit-length embedding.
    pub vector: Vec<f32>,
    /// Payload.
    pub payload: ChunkPayload,
}

/// What to search for.
#[derive(Debug, Clone)]
pub struct Query {
    /// The question as typed (for BM25 in hybrid mode).
    pub text: String,
    /// Its embedding.
    pub vector: Vec<f32>,
    /// Dense only, or dense and BM25 fused.
    pub mode: RetrievalMode,
}

/// Reciprocal Rank Fusion constant: a document at rank r in one list scores 1 / (RRF_K + r).
pub const RRF_K: usize = 60;

/// Candidates each side of a hybrid search contributes to the fusion.
pub fn prefetch_limit(k: usize) -> usize {
    (k * 5).clamp(20, 200)
}

/// Orders hits best first, equal scores by id: fused RRF scores tie often (first in one ranking
/// and third in the other scores like the reverse), and the engines break ties by their internal
/// order, which changes from run to run.
pub fn rank(hits: &mut [Hit]) {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Point id.
    pub id: String,
    /// Cosine similarity (dense), or the fused RRF score (hybrid); higher is better.
    pub score: f32,
    /// Payload.
    pub payload: ChunkPayload,
}

/// Namespace of chunk ids (UUIDv5), fixed forever so that ids agree across backends and runs.
const CHUNK_NAMESPACE: Uuid = Uuid::from_u128(0x5c1e_2a8e_7d0b_4b5e_9f3a_6e1d_2c4b_8a90);

/// The point id of chunk `index` of `source`: UUIDv5 of `source#index`.
pub fn chunk_id(source: &str, index: u32) -> Uuid {
    Uuid::new_v5(&CHUNK_NAMESPACE, format!("{source}#{index}").as_bytes())
}

/// What a turn needs of a vector index: search it, and know it is there.
#[async_trait]
pub trait VectorIndex: Send + Sync {
    /// Vector size the index holds.
    fn dim(&self) -> usize;

    /// A short description for `/health` (no credentials).
    fn describe(&self) -> String;

    /// The `k` best chunks for `query`, best first (ties by id, see [`rank`]).
    async fn search(&self, query: Query, k: usize) -> Result<Vec<Hit>, IndexError>;

    /// Cheap liveness probe for readiness.
    async fn ping(&self) -> Result<(), IndexError>;
}

/// What ingestion needs: replace a document's chunks, skip unchanged ones.
#[async_trait]
pub trait IndexWriter: VectorIndex {
    /// Number of chunks.
    async fn count(&self) -> Result<usize, IndexError>;

    /// The `doc_hash` stored for `source`, if the source is indexed.
    async fn source_hash(&self, source: &str) -> Result<Option<String>, IndexError>;

    /// Replaces every chunk of `source` with `points` (none left behind from an older version;
    /// no points removes the document).
    async fn replace_source(&self, source: &str, points: Vec<ChunkPoint>)
    -> Result<(), IndexError>;

    /// Every indexed document with its chunk count and ingest time, sorted by source.
    async fn sources(&self) -> Result<Vec<IndexedSource>, IndexError>;

    /// Builds search structures and makes writes durable after a batch of ingestion.
    async fn finish_ingest(&self) -> Result<(), IndexError>;
}

/// What moving an index between backends needs (`ragchat index export/import`).
#[async_trait]
pub trait IndexTransfer: IndexWriter {
    /// Up to `limit` chunks with their dense vectors, in id order, starting at `from`; and the
    /// id to continue from, if any are left.
    async fn scroll(
        &self,
        from: Option<Uuid>,
        limit: usize,
    ) -> Result<(Vec<ChunkPoint>, Option<Uuid>), IndexError>;

    /// Inserts or replaces `points` by id (their BM25 vectors are made from the payload text).
    async fn upsert(&self, points: Vec<ChunkPoint>) -> Result<(), IndexError>;
}

impl From<IndexError> for ApiError {
    /// The index's own message stays in the log: it may name paths or hosts.
    fn from(_: IndexError) -> Self {
        ApiError::new(
            ErrorCode::RetrievalUnavailable,
            "the document index could not be searched; try again shortly",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_tallied_from_payloads_with_or_without_an_ingest_time() {
        let mut docs = std::collections::BTreeMap::new();
        for payload in [
            serde_json::json!({"source":"b.md","ingested_at":"2026-12-01T10:00:00.000Z","text":"x"}),
            serde_json::json!({"source":"a.md"}),
            serde_json::json!({"source":"b.md","ingested_at":"2026-12-02T10:00:00.000Z"}),
        ] {
            tally(&mut docs, payload).expect("tallies");
        }
        let docs: Vec<IndexedSource> = docs.into_values().collect();
        assert_eq!(docs[0].source, "a.md");
        assert_eq!((docs[0].chunks, docs[0].ingested_at.as_deref()), (1, None));
        assert_eq!(
            (docs[1].chunks, docs[1].ingested_at.as_deref()),
            (2, Some("2026-12-02T10:00:00.000Z"))
        );
        assert!(
            tally(
                &mut std::collections::BTreeMap::new(),
                serde_json::json!({})
            )
            .is_err()
        );
    }

    #[test]
    fn chunk_ids_are_deterministic_and_distinct() {
        assert_eq!(chunk_id("docs/a.md", 0), chunk_id("docs/a.md", 0));
        assert_ne!(chunk_id("docs/a.md", 0), chunk_id("docs/a.md", 1));
        assert_ne!(chunk_id("docs/a.md", 0), chunk_id("docs/b.md", 0));
        assert_eq!(chunk_id("docs/a.md", 0).get_version_num(), 5);
    }
}
