//! Typed configuration: every setting is an env var (`RAGCHAT_…`) and a flag, parsed and
//! validated once at start, then passed down. Nothing reads the environment later.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use secrecy::SecretString;

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

/// Which embedder turns text into vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmbedderKind {
    /// all-MiniLM-L6-v2 in-process (candle), loaded from `RAGCHAT_EMBED_MODEL_DIR`.
    Local,
    /// Any OpenAI-compatible `/v1/embeddings` endpoint.
    Openai,
}

/// Which flavour of OpenAI-compatible chat endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LlmProvider {
    /// OpenAI, llama-server, Ollama, vLLM: `{base}/chat/completions`.
    Openai,
    /// Azure OpenAI: `{base}/openai/deployments/{deployment}/chat/completions?api-version=…`.
    Azure,
}

/// Which store keeps the turn records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// SQLite file under the data dir (one instance).
    Sqlite,
    /// Azure Cosmos DB for NoSQL (any number of replicas).
    Cosmos,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable lines.
    Pretty,
}

/// Every setting of the service. Each field is `--flag` and `RAGCHAT_FLAG`.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Directory for the embedded index and the SQLite records.
    #[arg(long, env = "RAGCHAT_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,

    /// Log format: json or pretty. Verbosity comes from RAGCHAT_LOG (e.g. "info,ragchat=debug").
    #[arg(
        long,
        env = "RAGCHAT_LOG_FORMAT",
        value_enum,
        default_value = "json",
        global = true
    )]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub server: ServerConfig,
    #[command(flatten)]
    pub chat: ChatConfig,
    #[command(flatten)]
    pub index: IndexConfig,
    #[command(flatten)]
    pub embed: EmbedConfig,
    #[command(flatten)]
    pub llm: LlmConfig,
    #[command(flatten)]
    pub store: StoreConfig,
}

/// HTTP and WebSocket settings.
#[derive(Debug, Clone, Args)]
pub struct ServerConfig {
    /// Address to listen on.
    #[arg(
        long,
        env = "RAGCHAT_ADDR",
        default_value = "127.0.0.1:8000",
        global = true
    )]
    pub addr: SocketAddr,

    /// Origins allowed to open /ws, comma-separated (e.g. "https://chat.example.com"); "*" allows
    /// any. Empty: only pages served by this host. Clients without an Origin header are allowed.
    #[arg(
        long,
        env = "RAGCHAT_ALLOWED_ORIGINS",
        value_delimiter = ',',
        global = true
    )]
    pub allowed_origins: Vec<String>,

    /// Largest WebSocket message accepted, in bytes; a bigger one closes the socket with 1009.
    #[arg(long, env = "RAGCHAT_MAX_FRAME_BYTES", default_value_t = 1024 * 1024, global = true)]
    pub max_frame_bytes: usize,

    /// Seconds of silence on a socket before the server sends a keep-alive ping.
    #[arg(
        long,
        env = "RAGCHAT_PING_INTERVAL_SECS",
        default_value_t = 30,
        global = true
    )]
    pub ping_interval_secs: u64,

    /// Seconds without a client text or binary frame before an idle socket is closed (pongs do not
    /// count; a running turn keeps it open).
    #[arg(
        long,
        env = "RAGCHAT_IDLE_TIMEOUT_SECS",
        default_value_t = 600,
        global = true
    )]
    pub idle_timeout_secs: u64,

    /// Seconds running turns get to finish on SIGTERM before they are cancelled.
    #[arg(
        long,
        env = "RAGCHAT_SHUTDOWN_GRACE_SECS",
        default_value_t = 20,
        global = true
    )]
    pub shutdown_grace_secs: u64,
}

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

/// Embedder settings.
#[derive(Debug, Clone, Args)]
pub struct EmbedConfig {
    /// Embedder backend.
    #[arg(
        id = "embedder",
        long = "embedder",
        env = "RAGCHAT_EMBEDDER",
        value_enum,
        default_value = "local",
        global = true
    )]
    pub kind: EmbedderKind,

    /// Directory of the local model (config.json, tokenizer.json, model.safetensors).
    /// Default: ~/.cache/ragchat/models/all-MiniLM-L6-v2 (what `make run` fetches).
    #[arg(
        id = "embed_model_dir",
        long = "embed-model-dir",
        env = "RAGCHAT_EMBED_MODEL_DIR",
        global = true
    )]
    pub model_dir: Option<PathBuf>,

    /// Base URL of the OpenAI-compatible embeddings endpoint (e.g. https://api.openai.com/v1).
    #[arg(
        id = "embed_url",
        long = "embed-url",
        env = "RAGCHAT_EMBED_URL",
        global = true
    )]
    pub url: Option<String>,

    /// API key for the embeddings endpoint.
    #[arg(
        id = "embed_api_key",
        long = "embed-api-key",
        env = "RAGCHAT_EMBED_API_KEY",
        global = true,
        hide_env_values = true
    )]
    pub api_key: Option<SecretString>,

    /// Model name sent to the embeddings endpoint.
    #[arg(
        id = "embed_model",
        long = "embed-model",
        env = "RAGCHAT_EMBED_MODEL",
        default_value = "text-embedding-3-small",
        global = true
    )]
    pub model: String,
}

/// Chat model settings.
#[derive(Debug, Clone, Args)]
pub struct LlmConfig {
    /// OpenAI-compatible base URL, up to and including `/v1` (Azure: the resource endpoint).
    #[arg(
        id = "llm_url",
        long = "llm-url",
        env = "RAGCHAT_LLM_URL",
        default_value = "http://127.0.0.1:8080/v1",
        global = true
    )]
    pub url: String,

    /// Endpoint flavour: openai (OpenAI, llama-server, Ollama, vLLM) or azure.
    #[arg(
        id = "llm_provider",
        long = "llm-provider",
        env = "RAGCHAT_LLM_PROVIDER",
        value_enum,
        default_value = "openai",
        global = true
    )]
    pub provider: LlmProvider,

    /// API key (Azure: the resource key). Empty for local servers.
    #[arg(
        id = "llm_api_key",
        long = "llm-api-key",
        env = "RAGCHAT_LLM_API_KEY",
        global = true,
        hide_env_values = true
    )]
    pub api_key: Option<SecretString>,

    /// Model name (Azure: ignored; the deployment decides).
    #[arg(
        id = "llm_model",
        long = "llm-model",
        env = "RAGCHAT_LLM_MODEL",
        default_value = "smollm2",
        global = true
    )]
    pub model: String,

    /// Azure OpenAI deployment name.
    #[arg(
        long = "llm-azure-deployment",
        env = "RAGCHAT_LLM_AZURE_DEPLOYMENT",
        global = true
    )]
    pub azure_deployment: Option<String>,

    /// Azure OpenAI api-version.
    #[arg(
        long = "llm-azure-api-version",
        env = "RAGCHAT_LLM_AZURE_API_VERSION",
        default_value = "2024-10-21",
        global = true
    )]
    pub azure_api_version: String,

    /// Sampling temperature, 0 to 2.
    #[arg(
        long = "llm-temperature",
        env = "RAGCHAT_LLM_TEMPERATURE",
        default_value_t = 0.2,
        global = true
    )]
    pub temperature: f32,

    /// Most tokens generated per answer.
    #[arg(
        long = "llm-max-tokens",
        env = "RAGCHAT_LLM_MAX_TOKENS",
        default_value_t = 384,
        global = true
    )]
    pub max_tokens: u32,

    /// Milliseconds to wait for a TCP/TLS connection to the chat endpoint.
    #[arg(
        long = "llm-connect-timeout-ms",
        env = "RAGCHAT_LLM_CONNECT_TIMEOUT_MS",
        default_value_t = 3000,
        global = true
    )]
    pub connect_timeout_ms: u64,

    /// Seconds to wait for the first token, and between two tokens, before giving up.
    #[arg(
        long = "llm-stall-timeout-secs",
        env = "RAGCHAT_LLM_STALL_TIMEOUT_SECS",
        default_value_t = 60,
        global = true
    )]
    pub stall_timeout_secs: u64,
}

/// Record store settings.
#[derive(Debug, Clone, Args)]
pub struct StoreConfig {
    /// Record store backend.
    #[arg(
        id = "store",
        long = "store",
        env = "RAGCHAT_STORE",
        value_enum,
        default_value = "sqlite",
        global = true
    )]
    pub kind: StoreKind,

    /// Capacity of the in-memory queue between turns and the store writer.
    #[arg(
        id = "record_queue",
        long = "record-queue",
        env = "RAGCHAT_RECORD_QUEUE",
        default_value_t = 1024,
        global = true
    )]
    pub queue: usize,

    /// Seconds one record may spend retrying a failing store before it is spooled to disk
    /// (under the data dir) for replay.
    #[arg(
        long = "record-retry-secs",
        env = "RAGCHAT_RECORD_RETRY_SECS",
        default_value_t = 30,
        global = true
    )]
    pub retry_secs: u64,

    /// Longest single store call, in milliseconds.
    #[arg(
        long = "store-timeout-ms",
        env = "RAGCHAT_STORE_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub timeout_ms: u64,

    /// Cosmos DB account endpoint, e.g. https://NAME.documents.azure.com:443/.
    #[arg(
        long = "cosmos-endpoint",
        env = "RAGCHAT_COSMOS_ENDPOINT",
        global = true
    )]
    pub cosmos_endpoint: Option<String>,

    /// Cosmos DB database.
    #[arg(
        long = "cosmos-database",
        env = "RAGCHAT_COSMOS_DATABASE",
        default_value = "ragchat",
        global = true
    )]
    pub cosmos_database: String,

    /// Cosmos DB container (partition key path /conversation_id).
    #[arg(
        long = "cosmos-container",
        env = "RAGCHAT_COSMOS_CONTAINER",
        default_value = "turns",
        global = true
    )]
    pub cosmos_container: String,

    /// Cosmos DB account key (secret; emulators and tests). Unset: Microsoft Entra ID (managed
    /// identity, workload identity, or the Azure CLI login), the production default.
    #[arg(
        long = "cosmos-key",
        env = "RAGCHAT_COSMOS_KEY",
        global = true,
        hide_env_values = true
    )]
    pub cosmos_key: Option<SecretString>,

    /// Create the database and container at start when missing (needs control-plane rights;
    /// with Entra ID prefer creating them with infra/ and leaving this off).
    #[arg(long = "cosmos-create", env = "RAGCHAT_COSMOS_CREATE", default_value = "false",
          global = true, action = clap::ArgAction::Set, value_name = "BOOL",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub cosmos_create: bool,
}

/// A setting that cannot work, named by its environment variable.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    /// The environment variable (also a flag) at fault.
    pub var: &'static str,
    /// What is wrong and what would be valid.
    pub message: String,
}

fn invalid(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        message: message.into(),
    }
}

impl Config {
    /// Checks what clap's types cannot, and fills in derived defaults. Called once at start.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        let c = &self.chat;
        if c.top_k == 0 || c.top_k > 50 {
            return Err(invalid("RAGCHAT_TOP_K", "must be between 1 and 50"));
        }
        if c.max_question_chars == 0 {
            return Err(invalid("RAGCHAT_MAX_QUESTION_CHARS", "must be at least 1"));
        }
        if self.server.max_frame_bytes < 1024 {
            return Err(invalid("RAGCHAT_MAX_FRAME_BYTES", "must be at least 1024"));
        }
        if self.server.ping_interval_secs == 0 {
            return Err(invalid("RAGCHAT_PING_INTERVAL_SECS", "must be at least 1"));
        }
        if self.server.idle_timeout_secs <= self.server.ping_interval_secs {
            return Err(invalid(
                "RAGCHAT_IDLE_TIMEOUT_SECS",
                "must be longer than RAGCHAT_PING_INTERVAL_SECS",
            ));
        }
        // "a, b/" and an empty value (as in .env.example) mean what they look like.
        self.server.allowed_origins = std::mem::take(&mut self.server.allowed_origins)
            .into_iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty())
            .collect();
        for origin in &self.server.allowed_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(invalid(
                    "RAGCHAT_ALLOWED_ORIGINS",
                    format!("{origin:?} is not an origin; use e.g. https://chat.example.com or *"),
                ));
            }
        }
        if self.store.kind == StoreKind::Cosmos {
            match &self.store.cosmos_endpoint {
                None => {
                    return Err(invalid(
                        "RAGCHAT_COSMOS_ENDPOINT",
                        "required with RAGCHAT_STORE=cosmos, e.g. \
                         https://NAME.documents.azure.com:443/",
                    ));
                }
                // Never echo the value: a pasted connection string carries the account key.
                Some(url) if url.contains("AccountKey") => {
                    return Err(invalid(
                        "RAGCHAT_COSMOS_ENDPOINT",
                        "holds a connection string; set the account URL \
                         (https://NAME.documents.azure.com:443/) here and the key, if any, in \
                         RAGCHAT_COSMOS_KEY",
                    ));
                }
                Some(url) if reqwest::Url::parse(url).is_err() || !url.starts_with("http") => {
                    return Err(invalid(
                        "RAGCHAT_COSMOS_ENDPOINT",
                        "is not a URL; e.g. https://NAME.documents.azure.com:443/",
                    ));
                }
                Some(_) => {}
            }
            for (var, name) in [
                ("RAGCHAT_COSMOS_DATABASE", &self.store.cosmos_database),
                ("RAGCHAT_COSMOS_CONTAINER", &self.store.cosmos_container),
            ] {
                // Cosmos forbids these in resource ids.
                if name.is_empty()
                    || name.len() > 255
                    || name.contains(['/', '\\', '?', '#'])
                    || name.ends_with(' ')
                {
                    return Err(invalid(
                        var,
                        "must be 1-255 characters without / \\ ? # or a trailing space",
                    ));
                }
            }
        }
        if self.index.kind == IndexKind::Qdrant {
            match &self.index.qdrant_url {
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
            let name = &self.index.qdrant_collection;
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
            if self.index.qdrant_timeout_ms < 100 {
                return Err(invalid("RAGCHAT_QDRANT_TIMEOUT_MS", "must be at least 100"));
            }
        }
        if self.store.timeout_ms < 100 {
            return Err(invalid("RAGCHAT_STORE_TIMEOUT_MS", "must be at least 100"));
        }
        if self.index.chunk_tokens < 16 || self.index.chunk_tokens > 8192 {
            return Err(invalid(
                "RAGCHAT_CHUNK_TOKENS",
                "must be between 16 and 8192",
            ));
        }
        if self.index.chunk_overlap >= self.index.chunk_tokens {
            return Err(invalid(
                "RAGCHAT_CHUNK_OVERLAP",
                "must be smaller than RAGCHAT_CHUNK_TOKENS",
            ));
        }
        if self.store.queue == 0 {
            return Err(invalid("RAGCHAT_RECORD_QUEUE", "must be at least 1"));
        }
        if !(0.0..=2.0).contains(&self.llm.temperature) {
            return Err(invalid(
                "RAGCHAT_LLM_TEMPERATURE",
                "must be between 0 and 2",
            ));
        }
        if self.llm.max_tokens == 0 {
            return Err(invalid("RAGCHAT_LLM_MAX_TOKENS", "must be at least 1"));
        }
        if !(1..=86_400).contains(&self.llm.stall_timeout_secs) {
            return Err(invalid(
                "RAGCHAT_LLM_STALL_TIMEOUT_SECS",
                "must be between 1 and 86400 (a day)",
            ));
        }
        check_url("RAGCHAT_LLM_URL", &self.llm.url)?;
        if self.llm.provider == LlmProvider::Azure && self.llm.azure_deployment.is_none() {
            return Err(invalid(
                "RAGCHAT_LLM_AZURE_DEPLOYMENT",
                "is required when RAGCHAT_LLM_PROVIDER=azure",
            ));
        }
        match self.embed.kind {
            EmbedderKind::Local => {
                let dir = match self.embed.model_dir.take() {
                    Some(dir) => dir,
                    None => default_model_dir().ok_or_else(|| {
                        invalid("RAGCHAT_EMBED_MODEL_DIR", "is not set and $HOME is unknown")
                    })?,
                };
                for file in ["config.json", "tokenizer.json", "model.safetensors"] {
                    if !dir.join(file).is_file() {
                        return Err(invalid(
                            "RAGCHAT_EMBED_MODEL_DIR",
                            format!(
                                "{} has no {file}; point it at an all-MiniLM-L6-v2 directory \
                                 (scripts/assets.sh models fetches one)",
                                dir.display()
                            ),
                        ));
                    }
                }
                self.embed.model_dir = Some(dir);
            }
            EmbedderKind::Openai => match &self.embed.url {
                Some(url) => check_url("RAGCHAT_EMBED_URL", url)?,
                None => {
                    return Err(invalid(
                        "RAGCHAT_EMBED_URL",
                        "is required when RAGCHAT_EMBEDDER=openai",
                    ));
                }
            },
        }
        Ok(self)
    }

    /// Where the embedded index lives.
    pub fn index_dir(&self) -> PathBuf {
        self.data_dir.join("index")
    }

    /// Where the SQLite record store lives.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("records.sqlite")
    }

    /// Where records wait when the store cannot take them.
    pub fn spool_dir(&self) -> PathBuf {
        self.data_dir.join("spool")
    }

    /// Retry policy of the record path.
    pub fn retry_policy(&self) -> crate::store::RetryPolicy {
        crate::store::RetryPolicy {
            budget: Duration::from_secs(self.store.retry_secs),
            attempt_timeout: Duration::from_millis(self.store.timeout_ms),
            ..crate::store::RetryPolicy::default()
        }
    }

    /// Keep-alive ping interval.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.server.ping_interval_secs)
    }

    /// Idle socket timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.server.idle_timeout_secs)
    }
}

fn check_url(var: &'static str, url: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(invalid(
            var,
            format!("{url:?} is not an http(s) URL; e.g. http://127.0.0.1:8080/v1"),
        )),
    }
}

/// `$RAGCHAT_CACHE/models/all-MiniLM-L6-v2`, else `~/.cache/ragchat/models/all-MiniLM-L6-v2`:
/// where `scripts/assets.sh` puts the model.
fn default_model_dir() -> Option<PathBuf> {
    let cache = match std::env::var_os("RAGCHAT_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/ragchat"),
    };
    Some(cache.join("models/all-MiniLM-L6-v2"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        config: Config,
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec![
            "ragchat",
            "--embedder",
            "openai",
            "--embed-url",
            "http://e/v1",
        ];
        argv.extend_from_slice(args);
        let probe = Probe::try_parse_from(argv).map_err(|e| e.to_string())?;
        probe.config.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid() {
        let config = parse(&[]).expect("defaults validate");
        assert_eq!(config.chat.top_k, 4);
        assert_eq!(config.server.max_frame_bytes, 1024 * 1024);
        assert!(!config.chat.test_mode);
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases: &[(&[&str], &str)] = &[
            (&["--top-k", "0"], "RAGCHAT_TOP_K"),
            (&["--llm-url", "not a url"], "RAGCHAT_LLM_URL"),
            (&["--chunk-overlap", "500"], "RAGCHAT_CHUNK_OVERLAP"),
            (
                &["--allowed-origins", "example.com"],
                "RAGCHAT_ALLOWED_ORIGINS",
            ),
            (&["--llm-provider", "azure"], "RAGCHAT_LLM_AZURE_DEPLOYMENT"),
            (
                &["--idle-timeout-secs", "5", "--ping-interval-secs", "10"],
                "RAGCHAT_IDLE_TIMEOUT_SECS",
            ),
            (&["--llm-temperature", "3"], "RAGCHAT_LLM_TEMPERATURE"),
            (&["--store", "cosmos"], "RAGCHAT_COSMOS_ENDPOINT"),
            (&["--index", "qdrant"], "RAGCHAT_QDRANT_URL"),
            (
                &["--index", "qdrant", "--qdrant-url", "localhost:6334"],
                "RAGCHAT_QDRANT_URL",
            ),
            (
                &[
                    "--index",
                    "qdrant",
                    "--qdrant-url",
                    "https://x.cloud.qdrant.io:6334/?api-key=secret",
                ],
                "RAGCHAT_QDRANT_URL",
            ),
            (
                &[
                    "--index",
                    "qdrant",
                    "--qdrant-url",
                    "http://127.0.0.1:6334",
                    "--qdrant-collection",
                    "a/b",
                ],
                "RAGCHAT_QDRANT_COLLECTION",
            ),
            (
                &["--store", "cosmos", "--cosmos-endpoint", "not a url"],
                "RAGCHAT_COSMOS_ENDPOINT",
            ),
            (
                &[
                    "--store",
                    "cosmos",
                    "--cosmos-endpoint",
                    "https://a.documents.azure.com:443/",
                    "--cosmos-container",
                    "a/b",
                ],
                "RAGCHAT_COSMOS_CONTAINER",
            ),
            (&["--store-timeout-ms", "5"], "RAGCHAT_STORE_TIMEOUT_MS"),
        ];
        let err = parse(&[
            "--store",
            "cosmos",
            "--cosmos-endpoint",
            "AccountEndpoint=https://a.documents.azure.com:443/;AccountKey=c2VjcmV0;",
        ])
        .expect_err("a connection string is refused");
        assert!(err.contains("connection string"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "the key is never echoed: {err}");
        for (args, var) in cases {
            let err = parse(args).expect_err("must be rejected");
            assert!(err.contains(var), "{args:?}: {err}");
        }
    }

    #[test]
    fn origins_are_normalised() {
        let config = parse(&["--allowed-origins", ""]).expect("empty means own host");
        assert!(config.server.allowed_origins.is_empty());
        let config = parse(&[
            "--allowed-origins",
            " https://Chat.example.com/ ,http://a:8000",
        ])
        .expect("ok");
        assert_eq!(
            config.server.allowed_origins,
            ["https://chat.example.com", "http://a:8000"]
        );
    }

    #[test]
    fn booleans_accept_the_usual_spellings() {
        for (value, expected) in [("true", true), ("1", true), ("yes", true), ("off", false)] {
            let config = parse(&["--test-mode", value]).expect("parses");
            assert_eq!(config.chat.test_mode, expected, "{value}");
        }
        assert!(parse(&["--test-mode", "maybe"]).is_err());
    }

    #[test]
    fn unparsable_values_are_rejected_by_clap() {
        let err = parse(&["--top-k", "many"]).expect_err("not a number");
        assert!(err.contains("--top-k"), "{err}");
        let err = parse(&["--index", "faiss"]).expect_err("unknown backend");
        assert!(err.contains("edge"), "lists valid values: {err}");
    }

    #[test]
    fn env_example_lists_every_variable() {
        use clap::CommandFactory;
        let example = include_str!("../.env.example");
        for arg in Probe::command().get_arguments() {
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy();
                assert!(
                    example.contains(&format!("{env}=")),
                    ".env.example does not list {env}"
                );
            }
        }
    }

    #[test]
    fn missing_local_model_dir_is_reported() {
        let probe = Probe::try_parse_from(["ragchat", "--embed-model-dir", "/nonexistent"])
            .expect("parses");
        let err = probe.config.validate().expect_err("no model there");
        assert_eq!(err.var, "RAGCHAT_EMBED_MODEL_DIR");
        assert!(err.message.contains("config.json"));
    }
}
