//! Test doubles of the four backends, to drive turns and sessions without a network: an embedder
//! and an index that answer at once, a chat model that plays a script in (paused) tokio time, a
//! record store in memory. Only for making a failure or a timing happen on purpose; the
//! integration tests use the real parts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use clap::Parser;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::ConfigArgs;
use crate::embed::{EmbedError, Embedder};
use crate::health::Health;
use crate::limits::{Limits, Refusals};
use crate::llm::{ChatEvent, ChatMessage, ChatModel, ChatStream, LlmError};
use crate::retrieval::{ChunkPayload, Hit, IndexError, Query, VectorIndex};
use crate::state::AppState;
use crate::store::{
    RecordStore, Recorder, RecorderTask, RetryPolicy, Spool, StoreError, TurnRecord,
};
use crate::telemetry::Metrics;
use crate::turn::FinishReason;

/// Answers every question with the same vector, or fails when told to.
#[derive(Default)]
pub struct FakeEmbedder {
    /// Fail every call.
    pub fail: bool,
    /// Every text it was asked to embed.
    pub seen: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl Embedder for FakeEmbedder {
    fn dim(&self) -> usize {
        4
    }
    fn describe(&self) -> String {
        "fake-embedder".into()
    }
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(texts.iter().cloned());
        if self.fail {
            return Err(EmbedError::Upstream("connection refused".into()));
        }
        Ok(texts.iter().map(|_| vec![0.5; 4]).collect())
    }
    async fn ping(&self) -> Result<(), EmbedError> {
        Ok(())
    }
}

/// Finds the same two chunks for every question, or fails when told to.
#[derive(Default)]
pub struct FakeIndex {
    /// Fail every search.
    pub fail: bool,
    /// The text of every query searched.
    pub queries: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl VectorIndex for FakeIndex {
    fn dim(&self) -> usize {
        4
    }
    fn describe(&self) -> String {
        "fake-index".into()
    }
    async fn search(&self, query: Query, k: usize) -> Result<Vec<Hit>, IndexError> {
        self.queries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(query.text);
        if self.fail {
            return Err(IndexError::Engine(
                "the index at /srv/secret/index is gone".into(),
            ));
        }
        let hit = |n: u32| Hit {
            id: format!("chunk-{n}"),
            score: 1.0 / f32::from(n as u16 + 1),
            payload: ChunkPayload {
                source: format!("docs/{n}.md"),
                title: format!("Doc {n}"),
                chunk_index: 0,
                text: format!("Fact number {n}."),
                doc_hash: "h".into(),
                page: None,
                ingested_at: None,
            },
        };
        Ok((1..=2).map(hit).take(k).collect())
    }
    async fn ping(&self) -> Result<(), IndexError> {
        Ok(())
    }
}

/// One step of a scripted answer.
#[derive(Debug, Clone)]
pub enum Step {
    /// Wait this long (tokio time).
    Wait(Duration),
    /// Send a token.
    Token(String),
    /// End with `stop`.
    Finish,
    /// Never send anything again.
    Stall,
}

/// `n` tokens `gap` apart, then `stop`.
pub fn tokens(n: usize, gap: Duration) -> Vec<Step> {
    let mut script = Vec::with_capacity(2 * n + 1);
    for i in 0..n {
        script.push(Step::Wait(gap));
        script.push(Step::Token(format!("w{i} ")));
    }
    script.push(Step::Finish);
    script
}

/// Plays a script for every question; knows when its answer stream was dropped (the upstream
/// request let go).
pub struct FakeLlm {
    script: Vec<Step>,
    panic: bool,
    /// Set when an answer stream is dropped.
    pub dropped: Arc<AtomicBool>,
    /// Every prompt it was given.
    pub prompts: Arc<Mutex<Vec<Vec<ChatMessage>>>>,
    /// What `complete` answers (the query rewrite); `None`: it fails.
    pub completion: Option<String>,
    /// Every prompt `complete` was given.
    pub completions: Arc<Mutex<Vec<Vec<ChatMessage>>>>,
}

impl FakeLlm {
    /// Answers with `script`.
    pub fn new(script: Vec<Step>) -> Self {
        Self {
            script,
            panic: false,
            dropped: Arc::new(AtomicBool::new(false)),
            prompts: Arc::default(),
            completion: None,
            completions: Arc::default(),
        }
    }

    /// Answers `complete` with `reply`.
    pub fn completing(mut self, reply: &str) -> Self {
        self.completion = Some(reply.to_owned());
        self
    }

    /// Panics when asked: a bug in a turn.
    pub fn panicking() -> Self {
        Self {
            panic: true,
            ..Self::new(Vec::new())
        }
    }
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl ChatModel for FakeLlm {
    async fn stream(&self, messages: Vec<ChatMessage>) -> Result<ChatStream, LlmError> {
        assert!(!self.panic, "the fake model was told to panic");
        self.prompts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(messages);
        let state = (
            self.script.clone(),
            0usize,
            DropFlag(Arc::clone(&self.dropped)),
        );
        let events = futures::stream::unfold(state, |(script, mut i, flag)| async move {
            loop {
                let step = script.get(i)?.clone();
                i += 1;
                let event = match step {
                    Step::Wait(d) => {
                        tokio::time::sleep(d).await;
                        continue;
                    }
                    Step::Stall => std::future::pending().await,
                    Step::Token(t) => ChatEvent::Token(t),
                    Step::Finish => ChatEvent::Finish(FinishReason::Stop),
                };
                return Some((Ok(event), (script, i, flag)));
            }
        });
        Ok(ChatStream::new(events.boxed()))
    }
    async fn complete(
        &self,
        messages: Vec<ChatMessage>,
        _: u32,
        _: Duration,
    ) -> Result<String, LlmError> {
        self.completions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(messages);
        self.completion
            .clone()
            .ok_or_else(|| LlmError::Unavailable("connection refused".into()))
    }
    fn model(&self) -> &str {
        "fake-model"
    }
    fn describe(&self) -> String {
        "fake-llm".into()
    }
    async fn ping(&self) -> Result<(), LlmError> {
        Ok(())
    }
}

/// Keeps records in memory.
#[derive(Default)]
pub struct MemoryStore {
    /// Every record put, in order.
    pub records: Mutex<Vec<TurnRecord>>,
}

impl MemoryStore {
    /// The record of `turn_id`, if put.
    pub fn get(&self, turn_id: &str) -> Option<TurnRecord> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.iter().find(|r| r.id == turn_id).cloned()
    }
}

#[async_trait]
impl RecordStore for MemoryStore {
    async fn put(&self, record: &TurnRecord) -> Result<(), StoreError> {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.retain(|r| r.id != record.id);
        records.push(record.clone());
        Ok(())
    }
    async fn conversation(&self, id: &str, n: usize) -> Result<Vec<TurnRecord>, StoreError> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        Ok(records
            .iter()
            .rev()
            .filter(|r| r.conversation_id == id)
            .take(n)
            .cloned()
            .collect())
    }
    fn describe(&self) -> String {
        "memory".into()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// An app over the fakes, configured by `flags`; keep the guard alive as long as the state.
pub struct FakeApp {
    /// The state a session or turn runs with.
    pub state: AppState,
    /// The store behind the recorder.
    pub store: Arc<MemoryStore>,
    /// The record writer; finish it to flush the queue.
    pub recorder: RecorderTask,
    _dir: tempfile::TempDir,
}

/// Builds the app state over `llm` and the other fakes, with extra `flags` (e.g.
/// `--ping-interval-secs 1`).
pub fn app(llm: FakeLlm, flags: &[&str]) -> FakeApp {
    app_over(FakeEmbedder::default(), FakeIndex::default(), llm, flags)
}

/// Builds the app state over these fakes.
pub fn app_over(embedder: FakeEmbedder, index: FakeIndex, llm: FakeLlm, flags: &[&str]) -> FakeApp {
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        config: ConfigArgs,
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().display().to_string();
    let mut argv = vec!["ragchat", "--data-dir", &data, "--embedder", "openai"];
    argv.extend([
        "--embed-url",
        "http://embed.invalid/v1",
        "--log-format",
        "pretty",
    ]);
    argv.extend_from_slice(flags);
    let config = Args::try_parse_from(argv)
        .expect("flags parse")
        .config
        .validate()
        .expect("valid config");
    let store = Arc::new(MemoryStore::default());
    let spool = Spool::open(&config.store.spool_dir, "fake", 1 << 20).expect("spool");
    let metrics = Metrics::local();
    let (recorder, recorder_task) = Recorder::start(
        store.clone(),
        Arc::new(spool),
        None,
        16,
        RetryPolicy::from_config(&config.store),
        metrics.record_latency(),
    );
    let (embedder, index, llm): (Arc<dyn Embedder>, Arc<dyn VectorIndex>, Arc<dyn ChatModel>) =
        (Arc::new(embedder), Arc::new(index), Arc::new(llm));
    let health = Health::new(embedder.clone(), index.clone(), llm.clone(), store.clone());
    let limits = Limits::new(config.limits.clone(), 1 << 20);
    let state = AppState {
        auth: Arc::new(Authenticator::new(&config.auth)),
        limits: Arc::new(limits),
        refusals: Arc::new(Refusals::default()),
        config: Arc::new(config),
        embedder,
        index,
        llm,
        store: store.clone(),
        recorder,
        health: Arc::new(health),
        shutdown: CancellationToken::new(),
        sessions: TaskTracker::new(),
        metrics: Arc::new(metrics),
    };
    FakeApp {
        state,
        store,
        recorder: recorder_task,
        _dir: dir,
    }
}
