//! all-MiniLM-L6-v2 in-process with candle: mean pooling over the attention mask, L2-normalised,
//! matching sentence-transformers (see shared notes on the traps this avoids).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};
use tokio::sync::Semaphore;

use super::{EmbedError, Embedder};

/// sentence-transformers' max sequence length for this model.
const MAX_TOKENS: usize = 256;
/// Texts per forward pass: bigger batches keep memory at its peak for little gain.
const BATCH: usize = 16;
/// Passes over at most this many tokens (texts × padded length) run on one thread. A question is
/// a few dozen tokens: its matrix products are too small to share, and waking a second core for
/// each of them cost more than it saved (query p50 17.7 -> 13.5 ms on 2 cores; docs/benchmarks.md).
/// Ingest batches are thousands of tokens and keep every core.
const SMALL_PASS_TOKENS: usize = 512;

/// MiniLM running on the CPU.
pub struct LocalEmbedder {
    inner: Arc<Model>,
    // One forward pass at a time: candle already uses every core for one, and two at once on a
    // 2-core machine only thrash.
    permit: Semaphore,
}

struct Model {
    bert: BertModel,
    tokenizer: Arc<Tokenizer>,
    dim: usize,
    name: String,
    /// A one-thread pool: candle's matrix products split their work over the rayon pool they
    /// run in, so small passes run here.
    single: rayon::ThreadPool,
}

impl LocalEmbedder {
    /// Loads config.json, tokenizer.json and model.safetensors from `dir`.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let read = |file: &str| {
            std::fs::read(dir.join(file))
                .map_err(|e| EmbedError::Load(format!("{}: {e}", dir.join(file).display())))
        };
        let config: BertConfig = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| EmbedError::Load(format!("config.json: {e}")))?;
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| EmbedError::Load(format!("tokenizer.json: {e}")))?;
        // The shipped tokenizer pads every input to 128 and truncates at 128; sentence-transformers
        // truncates at 256 and pads to the longest in the batch.
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| EmbedError::Load(format!("tokenizer truncation: {e}")))?;
        // Read into memory rather than memory-map: mapping is `unsafe` and this crate forbids it.
        let weights = read("model.safetensors")?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| EmbedError::Load(format!("model.safetensors: {e}")))?;
        let bert = BertModel::load(vb, &config)
            .map_err(|e| EmbedError::Load(format!("model.safetensors: {e}")))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "minilm".into());
        let single = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "embed-small".into())
            .build()
            .map_err(|e| EmbedError::Load(format!("embedding thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Model {
                bert,
                tokenizer: Arc::new(tokenizer),
                dim: config.hidden_size,
                name,
                single,
            }),
            permit: Semaphore::new(1),
        })
    }
}

impl Model {
    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let err = |e: &dyn std::fmt::Display| EmbedError::Compute(e.to_string());
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| err(&e))?;
        let rows = encodings.len();
        let cols = encodings.first().map_or(0, |e| e.len());
        let mut ids = Vec::with_capacity(rows * cols);
        let mut mask = Vec::with_capacity(rows * cols);
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        if rows * cols <= SMALL_PASS_TOKENS {
            self.single.install(|| self.forward(ids, mask, rows, cols))
        } else {
            self.forward(ids, mask, rows, cols)
        }
    }

    /// Mean-pooled, L2-normalised embeddings of `rows` padded token sequences of length `cols`.
    fn forward(
        &self,
        ids: Vec<u32>,
        mask: Vec<u32>,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let err = |e: &dyn std::fmt::Display| EmbedError::Compute(e.to_string());
        let device = &self.bert.device;
        let ids = Tensor::from_vec(ids, (rows, cols), device).map_err(|e| err(&e))?;
        let mask = Tensor::from_vec(mask, (rows, cols), device).map_err(|e| err(&e))?;
        let type_ids = ids.zeros_like().map_err(|e| err(&e))?;
        let hidden = self
            .bert
            .forward(&ids, &type_ids, Some(&mask))
            .map_err(|e| err(&e))?;
        // Mean over real tokens only, then L2-normalise.
        let mask = mask
            .to_dtype(DType::F32)
            .and_then(|m| m.unsqueeze(2))
            .map_err(|e| err(&e))?;
        let summed = hidden
            .broadcast_mul(&mask)
            .and_then(|t| t.sum(1))
            .map_err(|e| err(&e))?;
        let counts = mask.sum(1).map_err(|e| err(&e))?;
        let mean = summed.broadcast_div(&counts).map_err(|e| err(&e))?;
        let norm = mean
            .sqr()
            .and_then(|t| t.sum_keepdim(1))
            .and_then(|t| t.sqrt())
            .map_err(|e| err(&e))?;
        let normed = mean.broadcast_div(&norm).map_err(|e| err(&e))?;
        normed.to_vec2::<f32>().map_err(|e| err(&e))
    }
}

#[async_trait]
impl Embedder for LocalEmbedder {
    fn dim(&self) -> usize {
        self.inner.dim
    }

    fn describe(&self) -> String {
        format!("local:{}", self.inner.name)
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let _permit = self
            .permit
            .acquire()
            .await
            .map_err(|e| EmbedError::Compute(e.to_string()))?;
        let model = Arc::clone(&self.inner);
        // The forward pass is CPU-bound: keep it off the async workers.
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(texts.len());
            for batch in texts.chunks(BATCH) {
                out.extend(model.embed_batch(batch)?);
            }
            Ok(out)
        })
        .await
        .map_err(|e| EmbedError::Compute(e.to_string()))?
    }

    async fn ping(&self) -> Result<(), EmbedError> {
        Ok(())
    }

    fn token_counter(&self) -> Option<Arc<Tokenizer>> {
        Some(Arc::clone(&self.inner.tokenizer))
    }
}
