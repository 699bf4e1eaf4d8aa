//! `AppState`: what every request and turn may use, cheap to clone. Built by [`crate::app`],
//! read by [`crate::http`] and [`crate::chat`].

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::embed::Embedder;
use crate::health::Health;
use crate::limits::{Limits, Refusals};
use crate::llm::ChatModel;
use crate::retrieval::VectorIndex;
use crate::store::{RecordStore, Recorder};
use crate::telemetry::Metrics;

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
    /// Keeps records (reads conversations; writes go through `recorder`).
    pub store: Arc<dyn RecordStore>,
    /// Queue in front of the store.
    pub recorder: Recorder,
    /// Cached readiness.
    pub health: Arc<Health>,
    /// Checks credentials.
    pub auth: Arc<Authenticator>,
    /// What each client may use, and uses.
    pub limits: Arc<Limits>,
    /// Refused connections and asks, counted and logged.
    pub refusals: Arc<Refusals>,
    /// Counters and histograms (`/metrics`, OTLP, Application Insights).
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// Live WebSocket sessions, so shutdown can wait for their turns (and records).
    pub sessions: TaskTracker,
}
