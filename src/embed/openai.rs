//! Any OpenAI-compatible `/v1/embeddings` endpoint: OpenAI, Azure OpenAI, llama-server
//! `--embeddings`, Ollama, vLLM.

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::traits::RequestOptionsBuilder as _;
use async_openai::types::embeddings::CreateEmbeddingRequestArgs;
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use super::{EmbedError, Embedder};

/// Inputs per request; endpoints cap batch sizes (OpenAI: 2048, llama-server: its batch size).
const BATCH: usize = 64;

/// An embeddings endpoint.
pub struct OpenAiEmbedder {
    client: Client<OpenAIConfig>,
    model: String,
    dim: usize,
}

impl OpenAiEmbedder {
    /// Connects and learns the vector size with one probe embedding.
    pub async fn connect(
        url: &str,
        api_key: Option<&SecretString>,
        model: &str,
    ) -> Result<Self, EmbedError> {
        let mut config = OpenAIConfig::new().with_api_base(url.trim_end_matches('/'));
        if let Some(key) = api_key {
            config = config.with_api_key(key.expose_secret());
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| EmbedError::Upstream(e.to_string()))?;
        let mut embedder = Self {
            client: Client::build(http, config),
            model: model.to_owned(),
            dim: 0,
        };
        let probe = embedder.embed(vec!["dimension probe".into()]).await?;
        embedder.dim = probe.first().map_or(0, Vec::len);
        if embedder.dim == 0 {
            return Err(EmbedError::Upstream(
                "the endpoint returned an empty vector".into(),
            ));
        }
        Ok(embedder)
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn describe(&self) -> String {
        format!("openai:{}", self.model)
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            let request = CreateEmbeddingRequestArgs::default()
                .model(&self.model)
                .input(batch.to_vec())
                .build()
                .map_err(|e| EmbedError::Compute(e.to_string()))?;
            let mut response = self
                .client
                .embeddings()
                .headers(crate::telemetry::inject())
                .create(request)
                .await
                .map_err(|e| EmbedError::Upstream(e.to_string()))?;
            if response.data.len() != batch.len() {
                return Err(EmbedError::Upstream(format!(
                    "asked for {} vectors, got {}",
                    batch.len(),
                    response.data.len()
                )));
            }
            response.data.sort_by_key(|d| d.index);
            for d in response.data {
                out.push(normalise(d.embedding));
            }
        }
        Ok(out)
    }

    async fn ping(&self) -> Result<(), EmbedError> {
        self.embed(vec!["ping".into()]).await.map(drop)
    }
}

/// Cosine search assumes unit vectors; not every endpoint returns them.
fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}
