//! Building the app from config, in the one place where backends are chosen, and the server's
//! run loop with graceful shutdown and the background seed ingest.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tokio::task::JoinHandle;

use crate::auth::Authenticator;
use crate::config::{Config, EmbedBackend, IndexBackend, LlmBackend, StoreBackend};
use crate::embed::{Embedder, LocalEmbedder, OpenAiEmbedder};
use crate::health::Health;
use crate::limits::{Limits, Refusals};
use crate::llm::{ChatModel, OpenAiChat};
use crate::retrieval::{EdgeIndex, IndexError, IndexTransfer, IndexWriter, QdrantIndex};
use crate::state::AppState;
use crate::store::{
    CosmosStore, Journal, RecordStore, Recorder, RecorderTask, RetryPolicy, Spool, SqliteStore,
};
use crate::telemetry::{MetricExporters, Metrics};

/// The state plus the background tasks it owns.
pub struct App {
    /// Shared state.
    pub state: AppState,
    /// The index as ingestion sees it (the seed ingest writes through it).
    writer: Arc<dyn IndexWriter>,
    recorder_task: RecorderTask,
}

/// Opens the embedder (the index needs its vector size).
pub async fn open_embedder(config: &Config) -> anyhow::Result<Arc<dyn Embedder>> {
    Ok(match &config.embed {
        EmbedBackend::Local { model_dir } => {
            let dir = model_dir.clone();
            let embedder = tokio::task::spawn_blocking(move || LocalEmbedder::load(&dir))
                .await
                .context("loading the embedding model")??;
            Arc::new(embedder)
        }
        backend @ (EmbedBackend::OpenAi { .. } | EmbedBackend::Azure { .. }) => Arc::new(
            OpenAiEmbedder::connect(backend)
                .await
                .context("RAGCHAT_EMBED_URL: the embeddings endpoint did not answer")?,
        ),
    })
}

/// Opens the chat model client (no I/O).
pub fn open_llm(config: &Config) -> anyhow::Result<Arc<dyn ChatModel>> {
    Ok(match &config.llm.backend {
        // Both dialects are OpenAI's wire format; async-openai knows their URLs and headers.
        LlmBackend::OpenAi { .. } | LlmBackend::Azure { .. } => {
            Arc::new(OpenAiChat::new(&config.llm)?)
        }
    })
}

/// Ingests `RAGCHAT_INGEST_ON_START` while the server already answers (unready until it is done,
/// so a large seed does not keep the port closed past a platform's start-up limit). Failures to
/// reach the embeddings endpoint or the index are retried with back-off: a replica that starts
/// before its Qdrant server must not crash-loop. Unchanged files are skipped, so a restart costs
/// little.
async fn seed_index(state: AppState, index: Arc<dyn IndexWriter>) {
    use crate::embed::EmbedError;
    use crate::ingest::IngestError;
    let mut delay = std::time::Duration::from_secs(1);
    loop {
        let settings = &state.config.index;
        let run = crate::ingest::run(
            &settings.ingest_on_start,
            state.embedder.as_ref(),
            index.as_ref(),
            settings.chunk_tokens,
            settings.chunk_overlap,
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
pub async fn open_index(config: &Config, dim: usize) -> anyhow::Result<Arc<dyn IndexTransfer>> {
    Ok(match &config.index.backend {
        IndexBackend::Edge(edge) => {
            let (dir, memory) = (edge.dir.clone(), edge.memory);
            let index = tokio::task::spawn_blocking(move || EdgeIndex::open(&dir, dim, memory))
                .await
                .context("opening the index")??;
            Arc::new(index)
        }
        IndexBackend::Qdrant(settings) => {
            let index = QdrantIndex::new(settings, dim)?;
            match index.connect().await {
                Ok(()) => {}
                // A collection that cannot be ours: refuse, with what to do.
                Err(e @ IndexError::Open(_)) => return Err(e.into()),
                // Unreachable: serve anyway (unready, `retrieval_unavailable`) and connect when
                // it answers, rather than crash-loop with the server's bad minute.
                Err(e) => {
                    use crate::retrieval::VectorIndex;
                    tracing::warn!(
                        index = %index.describe(),
                        error = %e,
                        "the Qdrant server does not answer yet; retrieval is unavailable until it does"
                    );
                }
            }
            Arc::new(index)
        }
    })
}

/// Opens the record store and checks it is set up as expected.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn RecordStore>> {
    Ok(match &config.store.backend {
        StoreBackend::Sqlite { path } => Arc::new(
            SqliteStore::open(path).with_context(|| format!("opening {}", path.display()))?,
        ),
        StoreBackend::Cosmos(settings) => Arc::new(CosmosStore::open(settings).await?),
    })
}

/// The four backends a server needs.
pub struct Backends {
    /// Embedder.
    pub embedder: Arc<dyn Embedder>,
    /// Vector index (turns search it; ingest and transfer write it).
    pub index: Arc<dyn IndexTransfer>,
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
        let llm = open_llm(config)?;
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
    /// `exporters` push its metrics (OTLP, Application Insights) besides `/metrics`.
    pub async fn build(config: Config, exporters: MetricExporters) -> anyhow::Result<Self> {
        let backends = Backends::open(&config).await?;
        let metrics = Metrics::new(&config.telemetry, &config.instance, exporters)?;
        Self::assemble(config, backends, metrics)
    }

    /// Assembles the app from opened backends (metrics on `/metrics` only) and starts the
    /// record writer, which first replays whatever an earlier run left in the spool.
    pub fn with_backends(config: Config, backends: Backends) -> anyhow::Result<Self> {
        let metrics = Metrics::new(
            &config.telemetry,
            &config.instance,
            MetricExporters::default(),
        )?;
        Self::assemble(config, backends, metrics)
    }

    fn assemble(config: Config, backends: Backends, metrics: Metrics) -> anyhow::Result<Self> {
        let dir = &config.store.spool_dir;
        let spool = Spool::open(dir, &config.instance, config.store.spool_max_bytes).with_context(
            || {
                format!(
                    "RAGCHAT_DATA_DIR: cannot open the spool in {}",
                    dir.display()
                )
            },
        )?;
        let journal = config
            .store
            .journal
            .then(|| Journal::start(&spool))
            .transpose()
            .with_context(|| {
                format!(
                    "RAGCHAT_DATA_DIR: cannot start the record journal in {}",
                    dir.display()
                )
            })?;
        let (recorder, recorder_task) = Recorder::start(
            Arc::clone(&backends.store),
            Arc::new(spool),
            journal,
            config.store.queue,
            RetryPolicy::from_config(&config.store),
            metrics.record_latency(),
        );
        let index = Arc::clone(&backends.index);
        let health = Health::new(
            Arc::clone(&backends.embedder),
            index.clone(),
            Arc::clone(&backends.llm),
            Arc::clone(&backends.store),
        );
        let limits = Limits::new(config.limits.clone(), open_files());
        let state = AppState {
            auth: Arc::new(Authenticator::new(&config.auth)),
            limits: Arc::new(limits),
            refusals: Arc::new(Refusals::default()),
            config: Arc::new(config),
            embedder: backends.embedder,
            index,
            llm: backends.llm,
            store: backends.store,
            recorder,
            health: Arc::new(health),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            metrics: Arc::new(metrics),
        };
        observe(&state);
        Ok(Self {
            state,
            writer: backends.index,
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
            writer,
            recorder_task,
        } = self;
        let started = match operator_listener(&state).await {
            Ok(operator) => start_seed(&state, writer).map(|seed| (operator, seed)),
            Err(e) => Err(e),
        };
        let (operator, seed) = match started {
            Ok(started) => started,
            Err(e) => {
                recorder_task.finish().await;
                return Err(e);
            }
        };
        tracing::info!(
            addr = %listener.local_addr()?,
            operator_addr = ?operator.as_ref().and_then(|l| l.local_addr().ok()),
            auth = %state.auth.describe(),
            version = crate::VERSION,
            "serving"
        );
        let token = state.shutdown.clone();
        let stop = async move {
            shutdown.await;
            tracing::info!("shutting down: draining sockets");
            token.cancel();
        };
        let settings = crate::http::listener::Settings {
            header_timeout: state.config.limits.header_timeout,
            trusted_proxies: state.config.auth.trusted_proxies.clone(),
        };
        let public = crate::http::router(state.clone());
        let public = crate::http::listener::serve(listener, public, settings.clone(), stop);
        let operators = async {
            if let Some(listener) = operator {
                let router = crate::http::operator_router(state.clone());
                let stopped = state.shutdown.clone().cancelled_owned();
                crate::http::listener::serve(listener, router, settings, stopped).await;
            }
        };
        tokio::join!(public, operators);
        drain(&state, seed, recorder_task).await;
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

/// The operators' listener, when `RAGCHAT_OPERATOR_ADDR` is set.
async fn operator_listener(state: &AppState) -> anyhow::Result<Option<TcpListener>> {
    match state.config.auth.operator_addr {
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .with_context(|| format!("RAGCHAT_OPERATOR_ADDR: cannot listen on {addr}")),
        None => Ok(None),
    }
}

/// Starts the background ingest of `RAGCHAT_INGEST_ON_START`, if any; the server is unready
/// until it is done. A path that is not there is a mistake in the settings: an error now.
fn start_seed(
    state: &AppState,
    writer: Arc<dyn IndexWriter>,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let seed = &state.config.index.ingest_on_start;
    if seed.is_empty() {
        return Ok(None);
    }
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
    // Owned: `drain` awaits it (it stops at the shutdown token).
    #[allow(clippy::disallowed_methods)]
    let task = tokio::spawn(seed_index(state.clone(), writer));
    Ok(Some(task))
}

/// After the HTTP server stops: upgraded sockets outlive it, so wait for their sessions (each
/// ends its turn and queues its record) and the seed ingest, then drain the record queue.
async fn drain(state: &AppState, seed: Option<JoinHandle<()>>, recorder: RecorderTask) {
    state.sessions.close();
    let grace = state.config.server.shutdown_grace() + std::time::Duration::from_secs(10);
    if tokio::time::timeout(grace, state.sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            sessions = state.sessions.len(),
            "sessions still open past the grace period"
        );
    }
    if let Some(seed) = seed
        && let Err(e) = seed.await
    {
        tracing::error!(error = %e, "the seed ingest task failed");
    }
    recorder.finish().await;
    // A last push of the metrics, bounded; off the runtime (the readers' threads are joined).
    let metrics = Arc::clone(&state.metrics);
    if let Err(e) = tokio::task::spawn_blocking(move || metrics.shutdown()).await {
        tracing::warn!(error = %e, "metrics shutdown failed");
    }
}

/// What the metrics read at collection time: sockets and turns, the record path, readiness,
/// the seed ingest, refusals. The closures hold the parts, not the state.
fn observe(state: &AppState) {
    use opentelemetry::KeyValue;
    let m = &state.metrics;
    let limits = Arc::clone(&state.limits);
    m.gauge(
        "ragchat.sessions.open",
        "{session}",
        "Open WebSocket sessions",
        move || vec![(limits.open_sockets() as u64, Vec::new())],
    );
    let limits = Arc::clone(&state.limits);
    m.gauge(
        "ragchat.turns.running",
        "{turn}",
        "Turns streaming now",
        move || vec![(limits.running_turns() as u64, Vec::new())],
    );
    let recorder = state.recorder.clone();
    m.gauge(
        "ragchat.record.queue.depth",
        "{record}",
        "Records waiting in the in-memory queue",
        move || vec![(recorder.status().queued as u64, Vec::new())],
    );
    let recorder = state.recorder.clone();
    m.gauge(
        "ragchat.record.spool.depth",
        "{record}",
        "Records waiting in the on-disk spool",
        move || vec![(recorder.status().spooled, Vec::new())],
    );
    let recorder = state.recorder.clone();
    m.counter(
        "ragchat.records",
        "{record}",
        "Record path events: journaled, journal_fsyncs, written, retried (store calls), \
         spooled, replayed, rejected, logged_only",
        move || {
            let s = recorder.status();
            [
                ("journaled", s.journaled),
                ("journal_fsyncs", s.journal_fsyncs),
                ("written", s.written),
                ("retried", s.retried),
                ("spooled", recorder.spooled_total()),
                ("replayed", s.replayed),
                ("rejected", s.rejected),
                ("logged_only", s.logged_only),
            ]
            .into_iter()
            .map(|(event, n)| (n, vec![KeyValue::new("event", event)]))
            .collect()
        },
    );
    let health = Arc::clone(&state.health);
    m.gauge(
        "ragchat.component.up",
        "",
        "1 when a backend answers (the record store: also when degraded), by component",
        move || {
            let Some(report) = health.last_report() else {
                return Vec::new();
            };
            [
                ("index", &report.index),
                ("embedder", &report.embedder),
                ("llm", &report.llm),
                ("store", &report.store),
            ]
            .into_iter()
            .map(|(name, c)| {
                let up = c.status != crate::health::ComponentStatus::Down;
                (u64::from(up), vec![KeyValue::new("component", name)])
            })
            .collect()
        },
    );
    let health = Arc::clone(&state.health);
    m.gauge(
        "ragchat.ingest.seeding",
        "",
        "1 while the seed ingest (RAGCHAT_INGEST_ON_START) runs",
        move || vec![(u64::from(health.seeding().is_some()), Vec::new())],
    );
    let refusals = Arc::clone(&state.refusals);
    m.counter(
        "ragchat.refusals",
        "{refusal}",
        "Refused connections and asks, by kind",
        move || {
            refusals
                .counts()
                .into_iter()
                .map(|(kind, n)| (n, vec![KeyValue::new("kind", kind)]))
                .collect()
        },
    );
}

/// Raises the open-file soft limit to the hard one (every socket is a file; the default soft
/// limit, often 1,024, would cap the service far below what it can hold) and returns it.
pub fn open_files() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum;
    if let Some(hard) = hard
        && limit.current.is_some_and(|soft| soft < hard)
    {
        let raised = rustix::process::Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}
