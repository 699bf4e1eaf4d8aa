//! Application state, built from config in the one place where backends are chosen, and the
//! server's run loop with graceful shutdown.

use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, EmbedderKind, IndexKind, StoreKind};
use crate::embed::{Embedder, LocalEmbedder, OpenAiEmbedder};
use crate::health::Health;
use crate::llm::{ChatModel, OpenAiChat};
use crate::retrieval::{EdgeIndex, IndexError, QdrantIndex, QdrantSettings, VectorIndex};
use crate::store::{CosmosStore, RecordStore, Recorder, RecorderTask, Spool, SqliteStore};

/// Everything a request needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Turns text into vectors.
    pub embedder: Arc<dyn Embedder>,
    /// Finds chunks.
    pub index: Arc<dyn VectorIndex>,
    /// Writes answers.
    pub llm: Arc<dyn ChatModel>,
    /// Keeps records.
    pub store: Arc<dyn RecordStore>,
    /// Queue in front of the store.
    pub recorder: Recorder,
    /// Cached readiness.
    pub health: Arc<Health>,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// Live WebSocket sessions, so shutdown can wait for their turns (and records).
    pub sessions: TaskTracker,
}

/// The state plus the background tasks it owns.
pub struct App {
    /// Shared state.
    pub state: AppState,
    recorder_task: RecorderTask,
}

/// Opens the embedder (the index needs its vector size).
pub async fn open_embedder(config: &Config) -> anyhow::Result<Arc<dyn Embedder>> {
    Ok(match config.embed.kind {
        EmbedderKind::Local => {
            let dir = config
                .embed
                .model_dir
                .clone()
                .context("RAGCHAT_EMBED_MODEL_DIR is not set")?;
            let embedder = tokio::task::spawn_blocking(move || LocalEmbedder::load(&dir))
                .await
                .context("loading the embedding model")??;
            Arc::new(embedder)
        }
        EmbedderKind::Openai => {
            let url = config
                .embed
                .url
                .as_deref()
                .context("RAGCHAT_EMBED_URL is not set")?;
            Arc::new(
                OpenAiEmbedder::connect(url, config.embed.api_key.as_ref(), &config.embed.model)
                    .await
                    .context("RAGCHAT_EMBED_URL: the embeddings endpoint did not answer")?,
            )
        }
    })
}

/// Ingests `RAGCHAT_INGEST_ON_START` while the server already answers (unready until it is done,
/// so a large seed does not keep the port closed past a platform's start-up limit). Failures to
/// reach the embeddings endpoint or the index are retried with back-off: a replica that starts
/// before its Qdrant server must not crash-loop. Unchanged files are skipped, so a restart costs
/// little.
async fn seed_index(state: AppState) {
    use crate::embed::EmbedError;
    use crate::ingest::IngestError;
    let index = &state.config.index;
    let mut delay = std::time::Duration::from_secs(1);
    loop {
        let run = crate::ingest::run(
            &index.ingest_on_start,
            state.embedder.as_ref(),
            state.index.as_ref(),
            index.chunk_tokens,
            index.chunk_overlap,
        );
        let result = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            result = run => result,
        };
        match result {
            Ok(summary) => {
                tracing::info!(
                    indexed = summary.indexed,
                    unchanged = summary.unchanged,
                    chunks = summary.index_total,
                    ms = summary.elapsed_ms,
                    "ingested RAGCHAT_INGEST_ON_START"
                );
                state.health.set_seeding(None);
                return;
            }
            // Retrying cannot mend these: stay unready and say why.
            Err(
                e @ (IngestError::Missing(_)
                | IngestError::Chunking(_)
                | IngestError::Embed(EmbedError::Load(_) | EmbedError::Compute(_))
                | IngestError::Index(IndexError::Open(_))),
            ) => {
                tracing::error!(error = %e, "RAGCHAT_INGEST_ON_START failed");
                state
                    .health
                    .set_seeding(Some(format!("RAGCHAT_INGEST_ON_START failed: {e}")));
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_secs = delay.as_secs(),
                    "RAGCHAT_INGEST_ON_START could not finish; retrying");
                state
                    .health
                    .set_seeding(Some(format!("RAGCHAT_INGEST_ON_START: {e}; retrying")));
                tokio::select! {
                    _ = state.shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
}

/// Opens the vector index for vectors of `dim` dimensions.
pub async fn open_index(config: &Config, dim: usize) -> anyhow::Result<Arc<dyn VectorIndex>> {
    Ok(match config.index.kind {
        IndexKind::Edge => {
            let dir = config.index_dir();
            let memory = config.index.memory;
            let index = tokio::task::spawn_blocking(move || EdgeIndex::open(&dir, dim, memory))
                .await
                .context("opening the index")??;
            Arc::new(index)
        }
        IndexKind::Qdrant => {
            let settings = QdrantSettings {
                url: config.index.qdrant_url.clone().unwrap_or_default(),
                api_key: config.index.qdrant_api_key.clone(),
                collection: config.index.qdrant_collection.clone(),
                timeout: std::time::Duration::from_millis(config.index.qdrant_timeout_ms),
            };
            let index = QdrantIndex::new(&settings, dim)?;
            match index.connect().await {
                Ok(()) => {}
                // A collection that cannot be ours: refuse, with what to do.
                Err(e @ IndexError::Open(_)) => return Err(e.into()),
                // Unreachable: serve anyway (unready, `retrieval_unavailable`) and connect when
                // it answers, rather than crash-loop with the server's bad minute.
                Err(e) => tracing::warn!(
                    index = %index.describe(),
                    error = %e,
                    "the Qdrant server does not answer yet; retrieval is unavailable until it does"
                ),
            }
            Arc::new(index)
        }
    })
}

/// Opens the record store and checks it is set up as expected.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn RecordStore>> {
    Ok(match config.store.kind {
        StoreKind::Sqlite => Arc::new(
            SqliteStore::open(&config.sqlite_path())
                .with_context(|| format!("opening {}", config.sqlite_path().display()))?,
        ),
        StoreKind::Cosmos => Arc::new(CosmosStore::open(&config.store).await?),
    })
}

/// The four backends a server needs.
pub struct Backends {
    /// Embedder.
    pub embedder: Arc<dyn Embedder>,
    /// Vector index.
    pub index: Arc<dyn VectorIndex>,
    /// Chat model.
    pub llm: Arc<dyn ChatModel>,
    /// Record store.
    pub store: Arc<dyn RecordStore>,
}

impl Backends {
    /// Opens every backend named by `config`: the one place where backends are chosen.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "RAGCHAT_DATA_DIR: cannot create {}",
                config.data_dir.display()
            )
        })?;
        let embedder = open_embedder(config).await?;
        let index = open_index(config, embedder.dim()).await?;
        let llm: Arc<dyn ChatModel> = Arc::new(OpenAiChat::new(&config.llm)?);
        let store = open_store(config).await?;
        Ok(Self {
            embedder,
            index,
            llm,
            store,
        })
    }
}

impl App {
    /// Opens every backend named by `config`. Fails with a message naming what is wrong.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let backends = Backends::open(&config).await?;
        Self::with_backends(config, backends)
    }

    /// Assembles the app from opened backends and starts the record writer, which first
    /// replays whatever an earlier run left in the spool.
    pub fn with_backends(config: Config, backends: Backends) -> anyhow::Result<Self> {
        let dir = config.spool_dir();
        let spool =
            Spool::open(&dir, &crate::store::spool::instance_name()).with_context(|| {
                format!(
                    "RAGCHAT_DATA_DIR: cannot open the spool in {}",
                    dir.display()
                )
            })?;
        let (recorder, recorder_task) = Recorder::start(
            Arc::clone(&backends.store),
            Arc::new(spool),
            config.store.queue,
            config.retry_policy(),
        );
        Ok(Self {
            state: AppState {
                config: Arc::new(config),
                embedder: backends.embedder,
                index: backends.index,
                llm: backends.llm,
                store: backends.store,
                recorder,
                health: Arc::new(Health::default()),
                shutdown: CancellationToken::new(),
                sessions: TaskTracker::new(),
            },
            recorder_task,
        })
    }

    /// Serves HTTP on `listener` until `shutdown` resolves; then drains sockets (running turns
    /// get the grace period), flushes the record queue and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            state,
            recorder_task,
        } = self;
        let seed = &state.config.index.ingest_on_start;
        if !seed.is_empty() {
            // A path that is not there is a mistake in the settings: say so now.
            for path in seed {
                anyhow::ensure!(
                    path.exists(),
                    "RAGCHAT_INGEST_ON_START: {}: no such file or directory",
                    path.display()
                );
            }
            state
                .health
                .set_seeding(Some("ingesting RAGCHAT_INGEST_ON_START".into()));
            tokio::spawn(seed_index(state.clone()));
        }
        let token = state.shutdown.clone();
        let router = crate::http::router(state.clone());
        tracing::info!(addr = %listener.local_addr()?, version = crate::VERSION, "serving");
        // One token is one small frame, sent as soon as it exists: Nagle's algorithm would hold
        // it back waiting for the client's ACK of the previous one.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: draining sockets");
                token.cancel();
            })
            .await
            .context("HTTP server failed")?;
        // Upgraded sockets outlive the HTTP server: wait for their sessions (each ends its turn
        // and queues its record), then drain the record queue.
        state.sessions.close();
        let grace = std::time::Duration::from_secs(state.config.server.shutdown_grace_secs + 10);
        if tokio::time::timeout(grace, state.sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                sessions = state.sessions.len(),
                "sessions still open past the grace period"
            );
        }
        recorder_task.finish().await;
        tracing::info!("stopped");
        Ok(())
    }

    /// Splits into state and the writer task, for one-shot commands (`ask`).
    pub fn into_parts(self) -> (AppState, RecorderTask) {
        (self.state, self.recorder_task)
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
