//! Embeddings: the `Embedder` trait and its backends (in-process MiniLM, OpenAI-compatible).

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{ApiError, ErrorCode};

pub mod local;
pub mod openai;

pub use local::LocalEmbedder;
pub use openai::OpenAiEmbedder;

/// Why an embedding failed.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model files could not be loaded.
    #[error("cannot load the embedding model: {0}")]
    Load(String),
    /// The model failed on this input.
    #[error("embedding failed: {0}")]
    Compute(String),
    /// The embeddings endpoint could not be reached or answered with an error.
    #[error("embeddings endpoint: {0}")]
    Upstream(String),
}

impl From<EmbedError> for ApiError {
    /// The embedder's own message stays in the log: it may name paths or hosts.
    fn from(_: EmbedError) -> Self {
        ApiError::new(
            ErrorCode::EmbeddingUnavailable,
            "the question could not be embedded; try again shortly",
        )
    }
}

/// Turns text into unit-length vectors.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// Vector size.
    fn dim(&self) -> usize;

    /// A short description for `/health` and records, e.g. `local:all-MiniLM-L6-v2`.
    fn describe(&self) -> String;

    /// Embeds texts (documents or questions), one vector per text, in order.
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError>;

    /// Embeds one question.
    async fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.embed(vec![text.to_owned()])
            .await?
            .pop()
            .ok_or_else(|| EmbedError::Compute("no vector returned".into()))
    }

    /// Cheap liveness probe for readiness.
    async fn ping(&self) -> Result<(), EmbedError>;

    /// Counts tokens the way this embedder does, if it can; chunking uses it to size chunks.
    fn token_counter(&self) -> Option<Arc<tokenizers::Tokenizer>> {
        None
    }
}
