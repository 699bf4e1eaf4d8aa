//! Embedder settings.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use secrecy::SecretString;

use super::{ConfigError, check_url, invalid};

/// Which embedder turns text into vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmbedderKind {
    /// all-MiniLM-L6-v2 in-process (candle), loaded from `RAGCHAT_EMBED_MODEL_DIR`.
    Local,
    /// Any OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, llama-server, Ollama, vLLM).
    Openai,
    /// Azure OpenAI: `{base}/openai/deployments/{deployment}/embeddings?api-version=…`.
    Azure,
}

/// Embedder settings.
#[derive(Debug, Clone, Args)]
pub struct EmbedArgs {
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

    /// Base URL of the embeddings endpoint, up to and including `/v1` (e.g.
    /// https://api.openai.com/v1; Azure: the resource endpoint, https://NAME.openai.azure.com).
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

    /// Model name sent to the embeddings endpoint (Azure: ignored; the deployment decides).
    #[arg(
        id = "embed_model",
        long = "embed-model",
        env = "RAGCHAT_EMBED_MODEL",
        default_value = "text-embedding-3-small",
        global = true
    )]
    pub model: String,

    /// Azure OpenAI embeddings deployment name.
    #[arg(
        id = "embed_azure_deployment",
        long = "embed-azure-deployment",
        env = "RAGCHAT_EMBED_AZURE_DEPLOYMENT",
        global = true
    )]
    pub azure_deployment: Option<String>,

    /// Azure OpenAI api-version for embeddings.
    #[arg(
        id = "embed_azure_api_version",
        long = "embed-azure-api-version",
        env = "RAGCHAT_EMBED_AZURE_API_VERSION",
        default_value = "2024-10-21",
        global = true
    )]
    pub azure_api_version: String,
}

/// Which embedder, with what only that backend needs.
#[derive(Debug, Clone)]
pub enum EmbedBackend {
    /// all-MiniLM-L6-v2 in process.
    Local {
        /// A directory holding config.json, tokenizer.json and model.safetensors.
        model_dir: PathBuf,
    },
    /// An OpenAI-compatible `/v1/embeddings` endpoint.
    OpenAi {
        /// Base URL (…/v1).
        url: String,
        /// API key, if the endpoint wants one.
        api_key: Option<SecretString>,
        /// Model name.
        model: String,
    },
    /// An Azure OpenAI embeddings deployment.
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

impl EmbedArgs {
    /// Checks what clap cannot and resolves the backend's settings.
    pub(super) fn validate(self) -> Result<EmbedBackend, ConfigError> {
        match self.kind {
            EmbedderKind::Local => {
                let model_dir = match self.model_dir {
                    Some(dir) => dir,
                    None => default_model_dir().ok_or_else(|| {
                        invalid("RAGCHAT_EMBED_MODEL_DIR", "is not set and $HOME is unknown")
                    })?,
                };
                for file in ["config.json", "tokenizer.json", "model.safetensors"] {
                    if !model_dir.join(file).is_file() {
                        return Err(invalid(
                            "RAGCHAT_EMBED_MODEL_DIR",
                            format!(
                                "{} has no {file}; point it at an all-MiniLM-L6-v2 directory \
                                 (scripts/assets.sh models fetches one)",
                                model_dir.display()
                            ),
                        ));
                    }
                }
                Ok(EmbedBackend::Local { model_dir })
            }
            EmbedderKind::Openai | EmbedderKind::Azure => {
                let url = self.url.ok_or_else(|| {
                    invalid(
                        "RAGCHAT_EMBED_URL",
                        "is required when RAGCHAT_EMBEDDER is openai or azure",
                    )
                })?;
                check_url("RAGCHAT_EMBED_URL", &url)?;
                if self.kind == EmbedderKind::Openai {
                    return Ok(EmbedBackend::OpenAi {
                        url,
                        api_key: self.api_key,
                        model: self.model,
                    });
                }
                Ok(EmbedBackend::Azure {
                    url,
                    api_key: self.api_key,
                    deployment: self.azure_deployment.ok_or_else(|| {
                        invalid(
                            "RAGCHAT_EMBED_AZURE_DEPLOYMENT",
                            "is required when RAGCHAT_EMBEDDER=azure",
                        )
                    })?,
                    api_version: self.azure_api_version,
                })
            }
        }
    }
}

fn default_model_dir() -> Option<PathBuf> {
    let cache = match std::env::var_os("RAGCHAT_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/ragchat"),
    };
    Some(cache.join("models/all-MiniLM-L6-v2"))
}
