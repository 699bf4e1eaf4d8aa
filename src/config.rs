//! Typed configuration: every setting is an env var (`RAGCHAT_…`) and a flag, parsed once at
//! start into [`ConfigArgs`] and validated into [`Config`], whose backend settings are typed
//! (e.g. [`IndexBackend::Qdrant`] carries its URL): consumers never re-check what validation
//! guaranteed, and nothing reads the environment later. One module per part of the service.

// Doc comments of the settings are their `--help` text, where URLs are plain text.
#![allow(rustdoc::bare_urls)]

mod auth;
mod chat;
mod embed;
mod index;
mod limits;
mod llm;
mod server;
mod store;
mod telemetry;

use std::path::PathBuf;

use clap::{Args, ValueEnum};

pub use auth::{AuthArgs, AuthConfig, AuthMode, JwtSettings, TrustedProxies};
pub use chat::{ChatConfig, QueryRewrite};
pub use embed::{EmbedArgs, EmbedBackend, EmbedderKind};
pub use index::{
    EdgeSettings, IndexArgs, IndexBackend, IndexConfig, IndexKind, IndexMemory, QdrantSettings,
    RetrievalMode,
};
pub use limits::{LimitsArgs, LimitsConfig};
pub use llm::{LlmArgs, LlmBackend, LlmConfig, LlmProvider, provider_api};
pub use server::ServerConfig;
pub use store::{CosmosSettings, StoreArgs, StoreBackend, StoreConfig, StoreKind};
pub use telemetry::{OtlpSignals, SignalExporter, TelemetryArgs, TelemetryConfig};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable lines.
    Pretty,
}

/// Every setting of the service as given. Each field is `--flag` and `RAGCHAT_FLAG`;
/// [`ConfigArgs::validate`] turns it into a [`Config`].
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
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

    /// This replica's name (names its record spool file). Azure App Service sets it; elsewhere
    /// the host name is used.
    #[arg(long, env = "WEBSITE_INSTANCE_ID", global = true)]
    pub instance_id: Option<String>,

    #[command(flatten)]
    pub server: ServerConfig,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub limits: LimitsArgs,
    #[command(flatten)]
    pub chat: ChatConfig,
    #[command(flatten)]
    pub index: IndexArgs,
    #[command(flatten)]
    pub embed: EmbedArgs,
    #[command(flatten)]
    pub llm: LlmArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// The validated configuration: what every part of the service reads.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory for the embedded index, the SQLite records and the record spool.
    pub data_dir: PathBuf,
    /// Log format.
    pub log_format: LogFormat,
    /// This replica's name: `WEBSITE_INSTANCE_ID`, else the host name, else `local`.
    pub instance: String,
    /// HTTP and WebSocket settings.
    pub server: ServerConfig,
    /// Who may open a socket, and how the service is exposed.
    pub auth: AuthConfig,
    /// How much a client may use.
    pub limits: LimitsConfig,
    /// What a turn may take and how it is built.
    pub chat: ChatConfig,
    /// The vector index and chunking.
    pub index: IndexConfig,
    /// The embedder.
    pub embed: EmbedBackend,
    /// The chat model.
    pub llm: LlmConfig,
    /// The record store and the record path.
    pub store: StoreConfig,
    /// Where traces, metrics and logs go.
    pub telemetry: TelemetryConfig,
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

impl ConfigArgs {
    /// Checks what clap's types cannot and resolves each backend's settings. Called once at
    /// start.
    pub fn validate(mut self) -> Result<Config, ConfigError> {
        self.chat.validate()?;
        self.server.validate()?;
        let auth = self
            .auth
            .validate(self.server.addr, &self.server.allowed_origins)?;
        let limits = self.limits.validate()?;
        let store = self.store.validate(&self.data_dir)?;
        let index = self.index.validate(&self.data_dir)?;
        let llm = self.llm.validate()?;
        let embed = self.embed.validate()?;
        let telemetry = self.telemetry.validate()?;
        Ok(Config {
            instance: instance_name(self.instance_id.as_deref()),
            data_dir: self.data_dir,
            log_format: self.log_format,
            server: self.server,
            auth,
            limits,
            chat: self.chat,
            index,
            embed,
            llm,
            store,
            telemetry,
        })
    }
}

/// `WEBSITE_INSTANCE_ID` when set, else the host name, else `local`.
pub fn instance_name(given: Option<&str>) -> String {
    given
        .map(str::to_owned)
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "local".into())
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

/// An endpoint as shown in messages, logs and `/health`: scheme, host and port only. A path,
/// query or credential (or a connection string pasted by mistake) never reaches a log.
pub fn redact_endpoint(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(url) if !endpoint.contains("AccountKey") && url.host_str().is_some() => format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap_or("?"),
            url.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        _ => "(not an endpoint URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        config: ConfigArgs,
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
        assert_eq!(config.server.max_frame_bytes, 64 * 1024);
        assert!(!config.auth.required(), "anonymous on loopback by default");
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
