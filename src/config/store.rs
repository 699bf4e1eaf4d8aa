//! Record store settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use secrecy::SecretString;

use super::{ConfigError, invalid};

/// Which store keeps the turn records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// SQLite file under the data dir (one instance).
    Sqlite,
    /// Azure Cosmos DB for NoSQL (any number of replicas).
    Cosmos,
}

/// Record store settings.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
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
    /// Most bytes of records the on-disk spool holds while the store is unreachable; past it,
    /// records are written whole to the error log (the last place they survive) and counted.
    #[arg(
        long = "spool-max-bytes",
        env = "RAGCHAT_SPOOL_MAX_BYTES",
        default_value_t = 1 << 30,
        global = true
    )]
    pub spool_max_bytes: u64,

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

    /// Write every turn's record to a local journal (fsynced, one group commit every few
    /// milliseconds) before the client hears the turn's end, so that a crash cannot lose a turn
    /// the client saw end (docs/records.md). Off only where the data dir does not outlive the
    /// process anyway.
    #[arg(long = "record-journal", env = "RAGCHAT_RECORD_JOURNAL", default_value = "true",
          global = true, action = clap::ArgAction::Set, value_name = "BOOL",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub journal: bool,

    /// Create the database and container at start when missing (needs control-plane rights;
    /// with Entra ID prefer creating them with infra/ and leaving this off).
    #[arg(long = "cosmos-create", env = "RAGCHAT_COSMOS_CREATE", default_value = "false",
          global = true, action = clap::ArgAction::Set, value_name = "BOOL",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub cosmos_create: bool,
}

/// How to reach the Cosmos DB container.
#[derive(Debug, Clone)]
pub struct CosmosSettings {
    /// Account endpoint URL (never a connection string).
    pub endpoint: String,
    /// Database name.
    pub database: String,
    /// Container name.
    pub container: String,
    /// Account key; `None` means Microsoft Entra ID.
    pub key: Option<SecretString>,
    /// Create the database and container at start when missing.
    pub create: bool,
    /// Bound on each call, the SDK's own retries included.
    pub timeout: Duration,
}

/// Which store keeps the records, with what only that backend needs.
#[derive(Debug, Clone)]
pub enum StoreBackend {
    /// A SQLite file.
    Sqlite {
        /// `RAGCHAT_DATA_DIR/records.sqlite`.
        path: PathBuf,
    },
    /// Azure Cosmos DB for NoSQL.
    Cosmos(CosmosSettings),
}

/// Validated record store settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The backend.
    pub backend: StoreBackend,
    /// Records the in-memory queue holds before spilling to the spool.
    pub queue: usize,
    /// Total time one record may spend retrying before it is spooled.
    pub retry_budget: Duration,
    /// Bound on each store call.
    pub timeout: Duration,
    /// Where records wait when the store cannot take them (`RAGCHAT_DATA_DIR/spool`).
    pub spool_dir: PathBuf,
    /// Most bytes waiting there.
    pub spool_max_bytes: u64,
    /// Whether records are journaled before a turn's end is sent.
    pub journal: bool,
}

impl StoreArgs {
    /// Checks what clap cannot and resolves the backend's settings.
    pub(super) fn validate(self, data_dir: &Path) -> Result<StoreConfig, ConfigError> {
        if self.timeout_ms < 100 {
            return Err(invalid("RAGCHAT_STORE_TIMEOUT_MS", "must be at least 100"));
        }
        if self.queue == 0 {
            return Err(invalid("RAGCHAT_RECORD_QUEUE", "must be at least 1"));
        }
        let timeout = Duration::from_millis(self.timeout_ms);
        let backend = match self.kind {
            StoreKind::Sqlite => StoreBackend::Sqlite {
                path: data_dir.join("records.sqlite"),
            },
            StoreKind::Cosmos => StoreBackend::Cosmos(CosmosSettings {
                endpoint: cosmos_endpoint(self.cosmos_endpoint)?,
                database: resource_name("RAGCHAT_COSMOS_DATABASE", self.cosmos_database)?,
                container: resource_name("RAGCHAT_COSMOS_CONTAINER", self.cosmos_container)?,
                key: self.cosmos_key,
                create: self.cosmos_create,
                timeout: timeout.max(Duration::from_secs(1)),
            }),
        };
        Ok(StoreConfig {
            backend,
            queue: self.queue,
            retry_budget: Duration::from_secs(self.retry_secs),
            timeout,
            spool_dir: data_dir.join("spool"),
            spool_max_bytes: self.spool_max_bytes.max(1 << 20),
            journal: self.journal,
        })
    }
}

fn cosmos_endpoint(endpoint: Option<String>) -> Result<String, ConfigError> {
    match endpoint {
        None => Err(invalid(
            "RAGCHAT_COSMOS_ENDPOINT",
            "required with RAGCHAT_STORE=cosmos, e.g. https://NAME.documents.azure.com:443/",
        )),
        // Never echo the value: a pasted connection string carries the account key.
        Some(url) if url.contains("AccountKey") => Err(invalid(
            "RAGCHAT_COSMOS_ENDPOINT",
            "holds a connection string; set the account URL \
             (https://NAME.documents.azure.com:443/) here and the key, if any, in \
             RAGCHAT_COSMOS_KEY",
        )),
        Some(url) if reqwest::Url::parse(&url).is_err() || !url.starts_with("http") => {
            Err(invalid(
                "RAGCHAT_COSMOS_ENDPOINT",
                "is not a URL; e.g. https://NAME.documents.azure.com:443/",
            ))
        }
        Some(url) => Ok(url),
    }
}

/// A database or container name: Cosmos forbids these characters in resource ids.
fn resource_name(var: &'static str, name: String) -> Result<String, ConfigError> {
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
    Ok(name)
}
