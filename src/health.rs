//! Readiness: cheap, cached probes of every backend, and the details `/health` reports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Mutex;

use crate::embed::Embedder;
use crate::llm::ChatModel;
use crate::retrieval::VectorIndex;
use crate::store::{RecordStore, StoreError};

/// How long a probe result is reused: readiness is polled often, backends should not be.
const CACHE_FOR: Duration = Duration::from_secs(2);
/// A probe slower than this counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A component's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentStatus {
    /// It answers.
    Up,
    /// It does not answer, or is set up wrongly: the replica is not ready.
    Down,
    /// The record store only: failing, but turns are still answered and their records spooled,
    /// so the replica stays ready.
    Degraded,
}

/// One component's state.
#[derive(Debug, Clone, Serialize)]
pub struct Component {
    /// Up, down or degraded.
    pub status: ComponentStatus,
    /// Backend description.
    pub backend: String,
    /// Latency of the last probe, in milliseconds.
    pub latency_ms: f64,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Every component, as of the last probe.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when no component is down.
    pub ready: bool,
    /// Vector index.
    pub index: Component,
    /// Embedder.
    pub embedder: Component,
    /// Chat model.
    pub llm: Component,
    /// Record store.
    pub store: Component,
}

impl Report {
    /// The components that are down, by name, with why.
    pub fn down(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("index", &self.index),
            ("embedder", &self.embedder),
            ("llm", &self.llm),
            ("store", &self.store),
        ]
        .into_iter()
        .filter(|(_, c)| c.status == ComponentStatus::Down)
        .map(|(name, c)| (name, c.error.as_deref().unwrap_or("down")))
    }
}

/// Probes the backends (cached), and knows whether the seed ingest is still running.
pub struct Health {
    embedder: Arc<dyn Embedder>,
    index: Arc<dyn VectorIndex>,
    llm: Arc<dyn ChatModel>,
    store: Arc<dyn RecordStore>,
    last: Mutex<Option<(Instant, Arc<Report>)>>,
    /// Why the seed ingest (`RAGCHAT_INGEST_ON_START`) has not finished, while it has not.
    seeding: std::sync::Mutex<Option<String>>,
    /// The last report, for readers that cannot wait (the metrics' collection).
    published: std::sync::Mutex<Option<Arc<Report>>>,
}

async fn probe<E: std::fmt::Display>(
    backend: String,
    f: impl std::future::Future<Output = Result<(), E>>,
) -> Component {
    let t = Instant::now();
    let result = tokio::time::timeout(PROBE_TIMEOUT, f).await;
    let latency_ms = crate::turn::ms(t);
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {PROBE_TIMEOUT:?}")),
    };
    Component {
        status: if error.is_none() {
            ComponentStatus::Up
        } else {
            ComponentStatus::Down
        },
        backend,
        latency_ms,
        error,
    }
}

/// One log line per component whose status changed: readiness answers only its status, so
/// this is where an operator reads why a replica is down.
fn log_changes(before: Option<&Report>, now: &Report) {
    let named = |r: &Report| {
        [
            ("index", r.index.clone()),
            ("embedder", r.embedder.clone()),
            ("llm", r.llm.clone()),
            ("store", r.store.clone()),
        ]
    };
    let before = before.map(named);
    for (i, (name, c)) in named(now).into_iter().enumerate() {
        let was = before.as_ref().map(|b| b[i].1.status);
        if was == Some(c.status) || (was.is_none() && c.status == ComponentStatus::Up) {
            continue;
        }
        let error = c.error.as_deref().unwrap_or("");
        match c.status {
            ComponentStatus::Up => tracing::info!(component = name, backend = %c.backend, "up"),
            ComponentStatus::Down => {
                tracing::warn!(component = name, backend = %c.backend, error, "down")
            }
            ComponentStatus::Degraded => {
                tracing::warn!(component = name, backend = %c.backend, error, "degraded")
            }
        }
    }
}

impl Health {
    /// Probes these backends.
    pub fn new(
        embedder: Arc<dyn Embedder>,
        index: Arc<dyn VectorIndex>,
        llm: Arc<dyn ChatModel>,
        store: Arc<dyn RecordStore>,
    ) -> Self {
        Self {
            embedder,
            index,
            llm,
            store,
            last: Mutex::new(None),
            seeding: std::sync::Mutex::new(None),
            published: std::sync::Mutex::new(None),
        }
    }

    /// Marks the seed ingest as running (with what it is doing) or, with `None`, as done.
    pub fn set_seeding(&self, status: Option<String>) {
        *self.seeding.lock().unwrap_or_else(|e| e.into_inner()) = status;
    }

    /// What the seed ingest is doing, while it has not finished; readiness waits for it.
    pub fn seeding(&self) -> Option<String> {
        self.seeding
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A store that is set up wrongly makes the replica unready; one that is merely unreachable
    /// or throttling does not: records wait in the spool while turns go on.
    async fn probe_store(&self) -> Component {
        let mut transient = false;
        let ping = async {
            let result = self.store.ping().await;
            transient = result.as_ref().is_err_and(StoreError::is_transient);
            result
        };
        let mut component = probe(self.store.describe(), ping).await;
        if component.error.is_some()
            && (transient || component.latency_ms >= 1e3 * PROBE_TIMEOUT.as_secs_f64())
        {
            component.status = ComponentStatus::Degraded;
        }
        component
    }

    /// The current report, probing again when the cached one is stale. Concurrent callers
    /// share one probe.
    pub async fn report(&self) -> Arc<Report> {
        let mut last = self.last.lock().await;
        if let Some((at, report)) = last.as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return Arc::clone(report);
        }
        let (index, embedder, llm, store) = tokio::join!(
            probe(self.index.describe(), self.index.ping()),
            probe(self.embedder.describe(), self.embedder.ping()),
            probe(self.llm.describe(), self.llm.ping()),
            self.probe_store(),
        );
        let ready = [&index, &embedder, &llm, &store]
            .iter()
            .all(|c| c.status != ComponentStatus::Down);
        let report = Arc::new(Report {
            ready,
            index,
            embedder,
            llm,
            store,
        });
        log_changes(last.as_ref().map(|(_, r)| r.as_ref()), &report);
        *last = Some((Instant::now(), Arc::clone(&report)));
        *self.published.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&report));
        report
    }

    /// The last report made, without probing (none before the first probe).
    pub fn last_report(&self) -> Option<Arc<Report>> {
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
