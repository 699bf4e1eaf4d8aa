//! Vector index settings: which index, where it keeps its vectors, how chunks are made and
//! retrieved.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use secrecy::SecretString;

use super::{ConfigError, invalid};

/// Which vector index holds the chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IndexKind {
    /// Embedded Qdrant engine (qdrant-edge), persisted under the data dir. One process per dir.
    Edge,
    /// A Qdrant server or cluster over gRPC (`RAGCHAT_QDRANT_URL`), shared by every replica.
    Qdrant,
}

/// Where the embedded index keeps its dense vectors (Qdrant's `memory` placement).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum IndexMemory {
    /// In the index files, read through the page cache as searches touch them: the smallest
    /// resident memory; the first searches after a restart may read from disk.
    #[default]
    Cold,
    /// Read into memory when the index opens: the first searches are as fast as the rest, at the
    /// cost of memory and start-up time in proportion to the index.
    Cached,
}

/// How chunks are retrieved for a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RetrievalMode {
    /// Nearest neighbours of the question's embedding only.
    Dense,
    /// Dense and BM25 keyword results fused with Reciprocal Rank Fusion: also finds exact names,
    /// codes and rare words that embeddings blur.
    Hybrid,
}

impl std::fmt::Display for RetrievalMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Dense => "dense",
            Self::Hybrid => "hybrid",
        })
    }
}

/// Vector index settings.
#[derive(Debug, Clone, Args)]
pub struct IndexConfig {
    /// Vector index backend.
    #[arg(
        id = "index",
        long = "index",
        env = "RAGCHAT_INDEX",
        value_enum,
        default_value = "edge",
        global = true
    )]
    pub kind: IndexKind,

    /// Qdrant server gRPC URL (port 6334), e.g. `http://qdrant:6334` or a Qdrant Cloud
    /// `https://…:6334` URL. Required with `RAGCHAT_INDEX=qdrant`.
    #[arg(long, env = "RAGCHAT_QDRANT_URL", global = true)]
    pub qdrant_url: Option<String>,

    /// Qdrant API key (Qdrant Cloud, or a server with `service.api_key`). Never logged.
    #[arg(
        long,
        env = "RAGCHAT_QDRANT_API_KEY",
        hide_env_values = true,
        global = true
    )]
    pub qdrant_api_key: Option<SecretString>,

    /// Qdrant collection holding the chunks (created on first use).
    #[arg(
        long,
        env = "RAGCHAT_QDRANT_COLLECTION",
        default_value = "ragchat",
        global = true
    )]
    pub qdrant_collection: String,

    /// Bound on each Qdrant call, in milliseconds (connection and request).
    #[arg(
        long,
        env = "RAGCHAT_QDRANT_TIMEOUT_MS",
        default_value_t = 5000,
        global = true
    )]
    pub qdrant_timeout_ms: u64,

    /// Retrieval: `hybrid` (dense + BM25, fused with RRF) or `dense`.
    #[arg(
        long,
        env = "RAGCHAT_RETRIEVAL",
        value_enum,
        default_value = "hybrid",
        global = true
    )]
    pub retrieval: RetrievalMode,

    /// Embedded index only: `cold` keeps the dense vectors in the index files, paged in as
    /// searches need them (small resident memory); `cached` reads them into memory at start.
    /// Changing it rebuilds the index's storage once, at the next start.
    #[arg(
        long,
        env = "RAGCHAT_INDEX_MEMORY",
        value_enum,
        default_value = "cold",
        global = true
    )]
    pub memory: IndexMemory,

    /// Chunk size for ingestion, in embedder tokens (MiniLM reads at most 256).
    #[arg(
        long,
        env = "RAGCHAT_CHUNK_TOKENS",
        default_value_t = 200,
        global = true
    )]
    pub chunk_tokens: usize,

    /// Overlap between consecutive chunks, in tokens.
    #[arg(
        long,
        env = "RAGCHAT_CHUNK_OVERLAP",
        default_value_t = 30,
        global = true
    )]
    pub chunk_overlap: usize,

    /// Files or directories `serve` ingests at start, comma-separated, in the background: it
    /// listens at once and is unready until they are in, retrying while the embedder or index
    /// cannot be reached. Unchanged files are skipped, so restarts are cheap. Containers use it
    /// to index the documents they ship.
    #[arg(
        long,
        env = "RAGCHAT_INGEST_ON_START",
        value_delimiter = ',',
        global = true
    )]
    pub ingest_on_start: Vec<PathBuf>,
}

impl IndexConfig {
    /// Checks what clap cannot.
    pub(super) fn validate(&mut self) -> Result<(), ConfigError> {
        if self.kind == IndexKind::Qdrant {
            match &self.qdrant_url {
                None => {
                    return Err(invalid(
                        "RAGCHAT_QDRANT_URL",
                        "required with RAGCHAT_INDEX=qdrant, e.g. http://127.0.0.1:6334 \
                         (the gRPC port)",
                    ));
                }
                Some(url) if reqwest::Url::parse(url).is_err() || !url.starts_with("http") => {
                    return Err(invalid(
                        "RAGCHAT_QDRANT_URL",
                        "is not an http(s) URL; e.g. http://127.0.0.1:6334 (the gRPC port)",
                    ));
                }
                // Connection errors quote the URL: a credential in it would reach logs and
                // /health. Keys go in RAGCHAT_QDRANT_API_KEY.
                Some(url)
                    if reqwest::Url::parse(url).is_ok_and(|u| {
                        !u.username().is_empty() || u.password().is_some() || u.query().is_some()
                    }) =>
                {
                    return Err(invalid(
                        "RAGCHAT_QDRANT_URL",
                        "must not carry a user, password or query; put the key in \
                         RAGCHAT_QDRANT_API_KEY",
                    ));
                }
                Some(_) => {}
            }
            let name = &self.qdrant_collection;
            if name.is_empty()
                || name.len() > 255
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(invalid(
                    "RAGCHAT_QDRANT_COLLECTION",
                    "must be 1-255 characters of letters, digits, _ - .",
                ));
            }
            if self.qdrant_timeout_ms < 100 {
                return Err(invalid("RAGCHAT_QDRANT_TIMEOUT_MS", "must be at least 100"));
            }
        }
        if self.chunk_tokens < 16 || self.chunk_tokens > 8192 {
            return Err(invalid(
                "RAGCHAT_CHUNK_TOKENS",
                "must be between 16 and 8192",
            ));
        }
        if self.chunk_overlap >= self.chunk_tokens {
            return Err(invalid(
                "RAGCHAT_CHUNK_OVERLAP",
                "must be smaller than RAGCHAT_CHUNK_TOKENS",
            ));
        }
        Ok(())
    }
}
