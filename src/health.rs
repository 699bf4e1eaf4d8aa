//! Readiness: cheap, cached probes of every backend, and the details `/health` reports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Mutex;

use crate::app::AppState;

/// How long a probe result is reused: readiness is polled often, backends should not be.
const CACHE_FOR: Duration = Duration::from_secs(2);
/// A probe slower than this counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One component's state.
#[derive(Debug, Clone, Serialize)]
pub struct Component {
    /// `up`, `down`, or (the record store only) `degraded`: failing, but turns are still
    /// answered and their records spooled, so the replica stays ready.
    pub status: &'static str,
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
    /// True when every component is up.
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

/// Caches the last report, and knows whether the seed ingest is still running.
#[derive(Default)]
pub struct Health {
    last: Mutex<Option<(Instant, Arc<Report>)>>,
    /// Why the seed ingest (`RAGCHAT_INGEST_ON_START`) has not finished, while it has not.
    seeding: std::sync::Mutex<Option<String>>,
}

async fn probe<E: std::fmt::Display>(
    backend: String,
    f: impl std::future::Future<Output = Result<(), E>>,
) -> Component {
    let t = Instant::now();
    let result = tokio::time::timeout(PROBE_TIMEOUT, f).await;
    let latency_ms = (t.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {PROBE_TIMEOUT:?}")),
    };
    Component {
        status: if error.is_none() { "up" } else { "down" },
        backend,
        latency_ms,
        error,
    }
}

/// A store that is set up wrongly makes the replica unready; one that is merely unreachable or
/// throttling does not: records wait in the spool while turns go on.
async fn probe_store(state: &AppState) -> Component {
    let mut transient = false;
    let ping = async {
        let result = state.store.ping().await;
        transient = result
            .as_ref()
            .is_err_and(crate::store::StoreError::is_transient);
        result
    };
    let mut component = probe(state.store.describe(), ping).await;
    if component.error.is_some()
        && (transient || component.latency_ms >= 1e3 * PROBE_TIMEOUT.as_secs_f64())
    {
        component.status = "degraded";
    }
    component
}

impl Health {
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

    /// The current report, probing again when the cached one is stale. Concurrent callers
    /// share one probe.
    pub async fn report(&self, state: &AppState) -> Arc<Report> {
        let mut last = self.last.lock().await;
        if let Some((at, report)) = last.as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return Arc::clone(report);
        }
        let (index, embedder, llm, store) = tokio::join!(
            probe(state.index.describe(), state.index.ping()),
            probe(state.embedder.describe(), state.embedder.ping()),
            probe(
                format!("{} ({})", state.config.llm.url, state.llm.model()),
                state.llm.ping()
            ),
            probe_store(state),
        );
        let ready = [&index, &embedder, &llm, &store]
            .iter()
            .all(|c| c.status != "down");
        let report = Arc::new(Report {
            ready,
            index,
            embedder,
            llm,
            store,
        });
        *last = Some((Instant::now(), Arc::clone(&report)));
        report
    }
}
