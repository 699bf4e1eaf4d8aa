//! Record store settings.

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

impl StoreConfig {
    /// Checks what clap cannot.
    pub(super) fn validate(&mut self) -> Result<(), ConfigError> {
        if self.kind == StoreKind::Cosmos {
            match &self.cosmos_endpoint {
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
                ("RAGCHAT_COSMOS_DATABASE", &self.cosmos_database),
                ("RAGCHAT_COSMOS_CONTAINER", &self.cosmos_container),
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
        if self.timeout_ms < 100 {
            return Err(invalid("RAGCHAT_STORE_TIMEOUT_MS", "must be at least 100"));
        }
        if self.queue == 0 {
            return Err(invalid("RAGCHAT_RECORD_QUEUE", "must be at least 1"));
        }
        Ok(())
    }
}
