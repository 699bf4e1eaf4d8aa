//! Any OpenAI-compatible embeddings endpoint: OpenAI, Azure OpenAI, llama-server `--embeddings`,
//! Ollama, vLLM.
//!
//! async-openai builds each provider's URL, query and auth headers; the request and its answer
//! are read here, as leniently as the chat side: servers differ in what they add or leave out
//! (`usage`, `object`, `model`), and only the vectors and their order matter.

use std::time::Duration;

use async_openai::config::Config;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{EmbedError, Embedder};
use crate::config::{EmbedBackend, provider_api, redact_endpoint};

/// Inputs per request; endpoints cap batch sizes (OpenAI: 2048, llama-server: its batch size).
const BATCH: usize = 64;

/// An embeddings endpoint.
pub struct OpenAiEmbedder {
    /// The provider's URL, query and headers.
    api: Box<dyn Config>,
    http: reqwest::Client,
    /// What records and `/health` call it: `openai:MODEL` or `azure:DEPLOYMENT`.
    name: String,
    /// Scheme, host and port, for error messages.
    endpoint: String,
    model: String,
    dim: usize,
}

#[derive(Serialize)]
struct EmbeddingsBody<'a> {
    model: &'a str,
    input: &'a [String],
}

/// The answer, with only what every dialect sends.
#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<WireEmbedding>,
}

#[derive(Deserialize)]
struct WireEmbedding {
    embedding: Vec<f32>,
    /// Position in the request; absent from some servers, which answer in order.
    #[serde(default)]
    index: Option<usize>,
}

impl OpenAiEmbedder {
    /// A client for `backend` (which must be `OpenAi` or `Azure`). Does no I/O.
    pub fn new(backend: &EmbedBackend) -> Result<Self, EmbedError> {
        let (api, name, url, model) = match backend {
            EmbedBackend::OpenAi {
                url,
                api_key,
                model,
            } => (
                provider_api(url, api_key.as_ref(), None),
                format!("openai:{model}"),
                url,
                model.clone(),
            ),
            EmbedBackend::Azure {
                url,
                api_key,
                deployment,
                api_version,
            } => (
                provider_api(url, api_key.as_ref(), Some((deployment, api_version))),
                format!("azure:{deployment}"),
                url,
                deployment.clone(),
            ),
            EmbedBackend::Local { .. } => {
                return Err(EmbedError::Load("not an embeddings endpoint".into()));
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| EmbedError::Upstream(e.to_string()))?;
        Ok(Self {
            api,
            http,
            name,
            endpoint: redact_endpoint(url),
            model,
            dim: 0,
        })
    }

    /// Connects and learns the vector size with one probe embedding.
    pub async fn connect(backend: &EmbedBackend) -> Result<Self, EmbedError> {
        let mut embedder = Self::new(backend)?;
        let probe = embedder.embed(vec!["dimension probe".into()]).await?;
        embedder.dim = probe.first().map_or(0, Vec::len);
        if embedder.dim == 0 {
            return Err(EmbedError::Upstream(
                "the endpoint returned an empty vector".into(),
            ));
        }
        Ok(embedder)
    }

    /// One request of at most [`BATCH`] inputs: its vectors, in the inputs' order.
    async fn embed_batch(&self, batch: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let upstream = |what: String| EmbedError::Upstream(format!("{}: {what}", self.endpoint));
        let response = self
            .http
            .post(self.api.url("/embeddings"))
            .headers(self.api.headers())
            .headers(crate::telemetry::inject())
            .query(&self.api.query())
            .json(&EmbeddingsBody {
                model: &self.model,
                input: batch,
            })
            .send()
            .await
            .map_err(|e| upstream(e.to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| upstream(e.to_string()))?;
        if !status.is_success() {
            return Err(upstream(format!("HTTP {status}: {}", error_message(&body))));
        }
        let mut data = serde_json::from_slice::<EmbeddingsResponse>(&body)
            .map_err(|e| upstream(format!("unreadable response ({e})")))?
            .data;
        if data.len() != batch.len() {
            return Err(upstream(format!(
                "asked for {} vectors, got {}",
                batch.len(),
                data.len()
            )));
        }
        if data.iter().all(|d| d.index.is_some()) {
            data.sort_by_key(|d| d.index);
        }
        let dims = data.first().map_or(0, |d| d.embedding.len());
        if data.iter().any(|d| d.embedding.len() != dims) {
            return Err(upstream("vectors of different sizes in one answer".into()));
        }
        Ok(data.into_iter().map(|d| normalise(d.embedding)).collect())
    }
}

/// The message of an OpenAI-shaped error body (`{"error":{"message":…}}`), or the body's start.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Wrapped {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: String,
    }
    match serde_json::from_slice::<Wrapped>(body) {
        Ok(w) => w.error.message,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            out.extend(self.embed_batch(batch).await?);
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
