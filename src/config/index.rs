//! Vector index settings: which index, where it keeps its vectors, how chunks are made and
//! retrieved.

use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Vector index settings, as given.
#[derive(Debug, Clone, Args)]
pub struct IndexArgs {
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

/// The embedded index's settings.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// Its directory (`RAGCHAT_DATA_DIR/index`).
    pub dir: PathBuf,
    /// Where its dense vectors live.
    pub memory: IndexMemory,
}

/// How to reach a Qdrant server's collection.
#[derive(Debug, Clone)]
pub struct QdrantSettings {
    /// gRPC URL, without credentials or query.
    pub url: String,
    /// API key, if the server wants one.
    pub api_key: Option<SecretString>,
    /// Collection name.
    pub collection: String,
    /// Bound on each call.
    pub timeout: Duration,
}

/// Which index holds the chunks, with what only that backend needs.
#[derive(Debug, Clone)]
pub enum IndexBackend {
    /// The embedded engine.
    Edge(EdgeSettings),
    /// A Qdrant server or cluster.
    Qdrant(QdrantSettings),
}

/// Validated index settings.
#[derive(Debug, Clone)]
pub struct IndexConfig {
    /// The backend.
    pub backend: IndexBackend,
    /// Dense or hybrid retrieval.
    pub retrieval: RetrievalMode,
    /// Chunk size for ingestion, in embedder tokens.
    pub chunk_tokens: usize,
    /// Overlap between consecutive chunks, in tokens.
    pub chunk_overlap: usize,
    /// What `serve` ingests at start, in the background.
    pub ingest_on_start: Vec<PathBuf>,
}

impl IndexArgs {
    /// Checks what clap cannot and resolves the backend's settings.
    pub(super) fn validate(self, data_dir: &Path) -> Result<IndexConfig, ConfigError> {
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
        let backend = match self.kind {
            IndexKind::Edge => IndexBackend::Edge(EdgeSettings {
                dir: data_dir.join("index"),
                memory: self.memory,
            }),
            IndexKind::Qdrant => IndexBackend::Qdrant(QdrantSettings {
                url: qdrant_url(self.qdrant_url)?,
                collection: collection(self.qdrant_collection)?,
                api_key: self.qdrant_api_key,
                timeout: match self.qdrant_timeout_ms {
                    ms if ms < 100 => {
                        return Err(invalid("RAGCHAT_QDRANT_TIMEOUT_MS", "must be at least 100"));
                    }
                    ms => Duration::from_millis(ms),
                },
            }),
        };
        Ok(IndexConfig {
            backend,
            retrieval: self.retrieval,
            chunk_tokens: self.chunk_tokens,
            chunk_overlap: self.chunk_overlap,
            ingest_on_start: self.ingest_on_start,
        })
    }
}

fn qdrant_url(url: Option<String>) -> Result<String, ConfigError> {
    let Some(url) = url else {
        return Err(invalid(
            "RAGCHAT_QDRANT_URL",
            "required with RAGCHAT_INDEX=qdrant, e.g. http://127.0.0.1:6334 (the gRPC port)",
        ));
    };
    match reqwest::Url::parse(&url) {
        Ok(u) if url.starts_with("http") => {
            // Connection errors quote the URL: a credential in it would reach logs and /health.
            // Keys go in RAGCHAT_QDRANT_API_KEY.
            if !u.username().is_empty() || u.password().is_some() || u.query().is_some() {
                return Err(invalid(
                    "RAGCHAT_QDRANT_URL",
                    "must not carry a user, password or query; put the key in \
                     RAGCHAT_QDRANT_API_KEY",
                ));
            }
            Ok(url)
        }
        _ => Err(invalid(
            "RAGCHAT_QDRANT_URL",
            "is not an http(s) URL; e.g. http://127.0.0.1:6334 (the gRPC port)",
        )),
    }
}

fn collection(name: String) -> Result<String, ConfigError> {
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
    Ok(name)
}
