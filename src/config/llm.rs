//! Chat model settings.

use std::time::Duration;

use clap::{Args, ValueEnum};
use secrecy::SecretString;

use super::{ConfigError, check_url, invalid};

/// Which flavour of OpenAI-compatible chat endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LlmProvider {
    /// OpenAI, llama-server, Ollama, vLLM: `{base}/chat/completions`.
    Openai,
    /// Azure OpenAI: `{base}/openai/deployments/{deployment}/chat/completions?api-version=…`.
    Azure,
}

/// Chat model settings.
#[derive(Debug, Clone, Args)]
pub struct LlmArgs {
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

/// Which chat endpoint dialect, with what only that dialect needs.
#[derive(Debug, Clone)]
pub enum LlmBackend {
    /// OpenAI's API and every server that speaks it (llama-server, Ollama, vLLM).
    OpenAi {
        /// Base URL (…/v1).
        url: String,
        /// API key, if the endpoint wants one.
        api_key: Option<SecretString>,
    },
    /// Azure OpenAI: deployments, `api-version` and the `api-key` header.
    Azure {
        /// The resource's endpoint (https://NAME.openai.azure.com).
        url: String,
        /// API key.
        api_key: Option<SecretString>,
        /// The deployment answering.
        deployment: String,
        /// The REST API version.
        api_version: String,
    },
}

impl LlmBackend {
    /// The endpoint URL as configured (no credentials are ever in it).
    pub fn url(&self) -> &str {
        match self {
            Self::OpenAi { url, .. } | Self::Azure { url, .. } => url,
        }
    }
}

/// Validated chat model settings.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// The endpoint and its dialect.
    pub backend: LlmBackend,
    /// Model name sent with each request and recorded.
    pub model: String,
    /// Sampling temperature.
    pub temperature: f32,
    /// Most tokens per answer.
    pub max_tokens: u32,
    /// Bound on connecting.
    pub connect_timeout: Duration,
    /// Longest gap between two chunks of an answer (and before the response).
    pub stall_timeout: Duration,
}

impl LlmArgs {
    /// Checks what clap cannot and resolves the dialect's settings.
    pub(super) fn validate(self) -> Result<LlmConfig, ConfigError> {
        if !(0.0..=2.0).contains(&self.temperature) {
            return Err(invalid(
                "RAGCHAT_LLM_TEMPERATURE",
                "must be between 0 and 2",
            ));
        }
        if self.max_tokens == 0 {
            return Err(invalid("RAGCHAT_LLM_MAX_TOKENS", "must be at least 1"));
        }
        if !(1..=86_400).contains(&self.stall_timeout_secs) {
            return Err(invalid(
                "RAGCHAT_LLM_STALL_TIMEOUT_SECS",
                "must be between 1 and 86400 (a day)",
            ));
        }
        check_url("RAGCHAT_LLM_URL", &self.url)?;
        let backend = match self.provider {
            LlmProvider::Openai => LlmBackend::OpenAi {
                url: self.url,
                api_key: self.api_key,
            },
            LlmProvider::Azure => LlmBackend::Azure {
                url: self.url,
                api_key: self.api_key,
                deployment: self.azure_deployment.ok_or_else(|| {
                    invalid(
                        "RAGCHAT_LLM_AZURE_DEPLOYMENT",
                        "is required when RAGCHAT_LLM_PROVIDER=azure",
                    )
                })?,
                api_version: self.azure_api_version,
            },
        };
        Ok(LlmConfig {
            backend,
            model: self.model,
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            stall_timeout: Duration::from_secs(self.stall_timeout_secs),
        })
    }
}

/// An OpenAI-compatible provider's URL, query and auth headers, as async-openai builds them:
/// OpenAI's (`{url}/…`, a bearer key) or, given `(deployment, api_version)`, Azure OpenAI's
/// (`{url}/openai/deployments/{deployment}/…?api-version=…`, the `api-key` header). The chat
/// and the embeddings clients both use it.
pub fn provider_api(
    url: &str,
    api_key: Option<&SecretString>,
    azure: Option<(&str, &str)>,
) -> Box<dyn async_openai::config::Config> {
    use async_openai::config::{AzureConfig, OpenAIConfig};
    use secrecy::ExposeSecret;
    let base = url.trim_end_matches('/');
    match azure {
        None => {
            let mut c = OpenAIConfig::new().with_api_base(base);
            if let Some(key) = api_key {
                c = c.with_api_key(key.expose_secret());
            }
            Box::new(c)
        }
        Some((deployment, api_version)) => {
            let mut c = AzureConfig::new()
                .with_api_base(base)
                .with_api_version(api_version)
                .with_deployment_id(deployment);
            if let Some(key) = api_key {
                c = c.with_api_key(key.expose_secret());
            }
            Box::new(c)
        }
    }
}
