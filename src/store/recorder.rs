//! The record path. Turns hand their record to a bounded queue and move on; a writer task
//! delivers records to the store with a few in flight, retrying transient failures with
//! exponential back-off and jitter (honouring the store's retry-after) within a time budget.
//! What the store cannot take in time, or what overflows the queue, goes to the on-disk
//! [`Spool`], which is replayed in order once the store answers again, and at start-up.
//! No path drops a record: the last resort, when even the disk fails, is the error log with the
//! record's JSON.

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use opentelemetry::metrics::Histogram;
use serde::Serialize;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::journal::Entry;
use super::{Journal, RecordStore, Spool, StoreError, TurnRecord, now_rfc3339};
use crate::config::StoreConfig;

/// Records delivered to the store at once.
const IN_FLIGHT: usize = 16;
/// Records replayed from the spool per batch.
const REPLAY_BATCH: usize = 64;
/// How long shutdown may spend replaying the spool into a store that answers.
const SHUTDOWN_REPLAY: Duration = Duration::from_secs(5);

/// How hard to try before spooling.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total time one record may spend retrying before it is spooled.
    pub budget: Duration,
    /// Longest single store call.
    pub attempt_timeout: Duration,
    /// First back-off; doubles per attempt, with jitter.
    pub base: Duration,
    /// Longest back-off.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            budget: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(10),
            base: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The retry budget and call bound `config` sets, with the default back-off.
    pub fn from_config(config: &StoreConfig) -> Self {
        Self {
            budget: config.retry_budget,
            attempt_timeout: config.timeout,
            ..Self::default()
        }
    }

    /// Back-off before attempt `attempt + 1`: exponential, "equal jitter" (half fixed, half
    /// random), capped.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1 << attempt.min(16))
            .min(self.max_backoff);
        let random = std::collections::hash_map::RandomState::new().hash_one(attempt);
        exp / 2 + exp.mul_f64((random % 1000) as f64 / 2000.0)
    }
}

/// Sends records to the writer task.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Queued>,
    shared: Arc<Shared>,
}

/// A record on its way: the `record` span (in the turn's trace), when it was queued, and its
/// journal entry (settled when dropped: only once the store or the spool has the record).
struct Queued {
    record: TurnRecord,
    span: tracing::Span,
    at: Instant,
    entry: Option<Entry>,
}

impl Queued {
    /// Queued now, in a `record` span that continues the current span's trace without keeping
    /// that span open (the turn ends when its client has the final frame).
    fn new(record: TurnRecord, store: &str, entry: Option<Entry>) -> Self {
        let span = tracing::info_span!(parent: None, "record",
            turn_id = %record.id, store, retries = tracing::field::Empty, spooled = false);
        let _ = span.set_parent(tracing::Span::current().context());
        Self {
            record,
            span,
            at: Instant::now(),
            entry,
        }
    }

    /// The document it writes: a later record of the same turn (its feedback) replaces it.
    fn key(&self) -> Key {
        (self.record.conversation_id.clone(), self.record.id.clone())
    }
}

/// A record's document: conversation (as stored) and turn id.
type Key = (String, String);

struct Shared {
    store: Arc<dyn RecordStore>,
    spool: Arc<Spool>,
    /// Every record on disk before its turn's client hears the end (off: `None`).
    journal: Option<Journal>,
    policy: RetryPolicy,
    stats: Stats,
    /// From queueing to the store or the spool taking a record.
    latency: Histogram<f64>,
    /// The store's kind (`sqlite`, `cosmos`…), for the `record` span.
    store_kind: String,
    /// Set by spool appends made outside the writer (queue overflow), so it schedules a replay.
    wake: Notify,
}

#[derive(Default)]
struct Stats {
    written: AtomicU64,
    retried: AtomicU64,
    spooled: AtomicU64,
    replayed: AtomicU64,
    rejected: AtomicU64,
    degraded: AtomicBool,
    last_error: Mutex<Option<(String, String)>>,
    /// Records that neither the store nor the spool took: only in the error log.
    logged_only: AtomicU64,
    /// The spool's last failure (disk full, spool full), while it fails.
    spool_error: Mutex<Option<String>>,
    /// The journal's last failure, while it fails.
    journal_error: Mutex<Option<String>>,
}

/// How the record path is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecorderState {
    /// Records reach the store.
    Ok,
    /// The store fails or records wait in the spool; turns are still answered.
    Degraded,
}

/// The record path's state, for `/health`.
#[derive(Debug, Clone, Serialize)]
pub struct RecorderStatus {
    /// `ok`, or `degraded` while the store fails or records wait in the spool.
    pub state: RecorderState,
    /// Records waiting in the in-memory queue.
    pub queued: usize,
    /// Records waiting in the on-disk spool.
    pub spooled: u64,
    /// Records written since start (first try or retried).
    pub written: u64,
    /// Store calls retried since start.
    pub retried: u64,
    /// Records replayed from the spool since start.
    pub replayed: u64,
    /// Records the store refused for good, kept in the spool dir's `rejected.jsonl`.
    pub rejected: u64,
    /// Bytes waiting in the spool.
    pub spool_bytes: u64,
    /// Why the spool fails (disk full, spool full), while it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_error: Option<String>,
    /// Records that neither the store nor the spool took since start: each is whole in the error
    /// log, and nowhere else.
    pub logged_only: u64,
    /// Records journaled (on disk before their turn's end was sent) since start.
    pub journaled: u64,
    /// The journal's fsyncs since start (group commits: far fewer than records under load).
    pub journal_fsyncs: u64,
    /// Why the journal fails (disk full, read-only), while it does: turns are answered, but a
    /// crash could lose the records in memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_error: Option<String>,
    /// The last store error, and when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the last store error happened (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<String>,
}

/// The writer task; await [`RecorderTask::finish`] at shutdown to flush the queue.
pub struct RecorderTask {
    handle: JoinHandle<()>,
    close: CancellationToken,
    shared: Arc<Shared>,
}

impl Shared {
    fn failed(&self, error: &StoreError) {
        self.stats.degraded.store(true, Ordering::Relaxed);
        *self
            .stats
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((error.to_string(), now_rfc3339()));
    }

    fn succeeded(&self) {
        if self.spool.is_empty() {
            self.stats.degraded.store(false, Ordering::Relaxed);
        }
    }

    /// Appends to the spool (fsynced) off the runtime; whether the spool has them (else only the
    /// error log does).
    async fn spool(&self, records: Vec<TurnRecord>) -> bool {
        let n = records.len() as u64;
        let spool = Arc::clone(&self.spool);
        let result = tokio::task::spawn_blocking(move || {
            let r = spool.append(&records);
            (r, records)
        })
        .await;
        match result {
            Ok((Ok(()), records)) => {
                self.stats.spooled.fetch_add(n, Ordering::Relaxed);
                self.stats.degraded.store(true, Ordering::Relaxed);
                *self.spool_error() = None;
                for r in &records {
                    tracing::warn!(turn_id = %r.id, "record spooled; it will be replayed");
                }
                true
            }
            Ok((Err(e), records)) => {
                self.stats.degraded.store(true, Ordering::Relaxed);
                *self.spool_error() = Some(e.to_string());
                for record in &records {
                    self.last_resort(record, &e);
                }
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "spool task failed");
                false
            }
        }
    }

    /// Spools queued records, ending their spans and timing them; their journal entries are
    /// settled once the spool has them, and kept (replayed at the next start) if it failed.
    async fn spool_queued(&self, queued: Vec<Queued>) {
        let mut records = Vec::with_capacity(queued.len());
        let mut ends = Vec::with_capacity(queued.len());
        for q in queued {
            q.span.record("spooled", true);
            records.push(q.record);
            ends.push((q.span, q.at, q.entry));
        }
        let spooled = self.spool(records).await;
        for (_span, at, entry) in ends {
            self.latency.record(at.elapsed().as_secs_f64(), &[]);
            if let Some(entry) = entry.filter(|_| !spooled) {
                entry.keep();
            }
        }
    }

    /// Keeps a record the store refused for good aside (off the runtime: it writes a file);
    /// whether that worked (else only the error log has it).
    async fn reject(&self, record: TurnRecord, error: &StoreError) -> bool {
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %error, turn_id = %record.id, "the store refused a record for good");
        let spool = Arc::clone(&self.spool);
        match tokio::task::spawn_blocking(move || {
            let r = spool.set_aside_record(&record);
            (r, record)
        })
        .await
        {
            Ok((Ok(()), _)) => true,
            Ok((Err(e), record)) => {
                self.last_resort(&record, &e);
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "spool task failed");
                false
            }
        }
    }

    /// One store call, bounded in time.
    async fn put_once(&self, record: &TurnRecord) -> Result<(), StoreError> {
        match timeout(self.policy.attempt_timeout, self.store.put(record)).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::transient(format!(
                "no answer within {:?}",
                self.policy.attempt_timeout
            ))),
        }
    }

    /// Writes one record, retrying within the budget; spools it when that runs out or the
    /// process is closing. Returns its key, which is free for the next record of the turn.
    async fn deliver(self: Arc<Self>, queued: Queued, closing: CancellationToken) -> Key {
        let key = queued.key();
        let Queued {
            record,
            span,
            at,
            entry,
        } = queued;
        let kept = self
            .deliver_one(record, &span, closing)
            .instrument(span.clone())
            .await;
        self.latency.record(at.elapsed().as_secs_f64(), &[]);
        // In the store or the spool now; else only in the log, and the journal keeps it too.
        if let Some(entry) = entry.filter(|_| !kept) {
            entry.keep();
        }
        key
    }

    /// Whether the record is in the store, the spool or the rejected file.
    async fn deliver_one(
        &self,
        record: TurnRecord,
        span: &tracing::Span,
        closing: CancellationToken,
    ) -> bool {
        let deadline = Instant::now() + self.policy.budget;
        let mut attempt = 0;
        loop {
            let error = match self.put_once(&record).await {
                Ok(()) => {
                    span.record("retries", i64::from(attempt));
                    self.stats.written.fetch_add(1, Ordering::Relaxed);
                    self.succeeded();
                    return true;
                }
                Err(e) => e,
            };
            self.failed(&error);
            let wait = match &error {
                StoreError::Transient { retry_after, .. } => {
                    retry_after.unwrap_or_else(|| self.policy.backoff(attempt))
                }
                _ => {
                    span.record("retries", i64::from(attempt));
                    return self.reject(record, &error).await;
                }
            };
            if closing.is_cancelled() || Instant::now() + wait > deadline {
                tracing::warn!(error = %error, turn_id = %record.id, attempts = attempt + 1,
                    "store unavailable past the retry budget");
                span.record("retries", i64::from(attempt));
                span.record("spooled", true);
                return self.spool(vec![record]).await;
            }
            tracing::debug!(error = %error, turn_id = %record.id, ?wait, "retrying record");
            self.stats.retried.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                () = sleep(wait) => {}
                () = closing.cancelled() => {}
            }
            attempt += 1;
        }
    }

    /// Replays the spool in order until it is empty (true), the store fails or `stop` says so
    /// (false).
    async fn replay(&self, stop: impl Fn() -> bool) -> bool {
        loop {
            let spool = Arc::clone(&self.spool);
            let batch =
                match tokio::task::spawn_blocking(move || spool.read_front(REPLAY_BATCH)).await {
                    Ok(Ok(batch)) => batch,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot read the spool");
                        return false;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "spool task failed");
                        return false;
                    }
                };
            if batch.is_empty() {
                self.succeeded();
                return true;
            }
            let mut done = 0;
            let mut stalled = false;
            for record in &batch {
                match self.put_once(record).await {
                    Ok(()) => {
                        self.stats.replayed.fetch_add(1, Ordering::Relaxed);
                        self.stats.written.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if !e.is_transient() => {
                        self.failed(&e);
                        self.reject(record.clone(), &e).await;
                    }
                    Err(e) => {
                        self.failed(&e);
                        stalled = true;
                        break;
                    }
                }
                done += 1;
                if stop() {
                    stalled = true;
                    break;
                }
            }
            if done > 0 {
                let spool = Arc::clone(&self.spool);
                match tokio::task::spawn_blocking(move || spool.remove_front(done)).await {
                    Ok(Ok(())) => tracing::info!(
                        replayed = done,
                        left = self.spool.len(),
                        "replayed spooled records"
                    ),
                    Ok(Err(e)) => {
                        // They are in the store and still in the spool: a later replay
                        // upserts them again, which is harmless.
                        tracing::error!(error = %e, "cannot trim the spool");
                        return false;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "spool task failed");
                        return false;
                    }
                }
            }
            if stalled {
                return self.spool.is_empty();
            }
        }
    }
}

impl Shared {
    fn spool_error(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.stats
            .spool_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn journal_error(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.stats
            .journal_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The store and the disk both failed: the log is the last place the turn survives.
    fn last_resort(&self, record: &TurnRecord, error: &std::io::Error) {
        self.stats.logged_only.fetch_add(1, Ordering::Relaxed);
        let json = serde_json::to_string(record).unwrap_or_default();
        tracing::error!(error = %error, turn_id = %record.id, record = %json,
            "could not spool the turn record; it is only in this log line");
    }
}

async fn writer(shared: Arc<Shared>, mut rx: mpsc::Receiver<Queued>, closing: CancellationToken) {
    let mut in_flight = FuturesUnordered::new();
    // One write per document at a time, in arrival order: a turn's record and its feedback
    // (the same document, rated) must not race, or the older could land last.
    let mut busy: HashSet<Key> = HashSet::new();
    let mut held: VecDeque<Queued> = VecDeque::new();
    let mut replay_at: Option<Instant> = (!shared.spool.is_empty()).then(Instant::now);
    let mut replay_attempt = 0;
    let mut closed = false;
    loop {
        if replay_at.is_none() && !shared.spool.is_empty() {
            replay_at = Some(Instant::now() + shared.policy.backoff(replay_attempt));
        }
        tokio::select! {
            biased;
            () = closing.cancelled(), if !closed => {
                // Refuse new records, then drain what is queued.
                rx.close();
                closed = true;
            }
            Some(key) = in_flight.next(), if !in_flight.is_empty() => {
                busy.remove(&key);
                let mut next = take_held(&mut held, &key);
                if shared.spool.is_empty() {
                    if let Some(queued) = next.pop_front() {
                        busy.insert(key);
                        in_flight.push(Arc::clone(&shared).deliver(queued, closing.clone()));
                    }
                    held.extend(next);
                } else if !next.is_empty() {
                    // Their elder may have gone to the spool: they go behind it, in order.
                    shared.spool_queued(next.into()).await;
                }
            }
            // Before new records: a steady stream of them must not starve the replay.
            () = sleep_until(replay_at.unwrap_or_else(Instant::now)),
                if replay_at.is_some() && in_flight.is_empty() =>
            {
                // Interrupted by shutdown, which replays once more within its own deadline.
                if shared.replay(|| closing.is_cancelled()).await {
                    replay_attempt = 0;
                } else {
                    replay_attempt = (replay_attempt + 1).min(16);
                }
                replay_at = None;
            }
            record = rx.recv(), if in_flight.len() < IN_FLIGHT => match record {
                // Behind records that already wait in the spool, to keep their order.
                // One fsync for whatever else is queued.
                Some(queued) if busy.contains(&queued.key()) => held.push_back(queued),
                Some(queued) if !shared.spool.is_empty() => {
                    let mut batch = vec![queued];
                    while batch.len() < REPLAY_BATCH * 4 {
                        match rx.try_recv() {
                            Ok(queued) if busy.contains(&queued.key()) => held.push_back(queued),
                            Ok(queued) => batch.push(queued),
                            Err(_) => break,
                        }
                    }
                    shared.spool_queued(batch).await;
                }
                Some(queued) => {
                    busy.insert(queued.key());
                    in_flight.push(Arc::clone(&shared).deliver(queued, closing.clone()));
                }
                None => break,
            },
            () = shared.wake.notified() => {}
        }
    }
    while let Some(key) = in_flight.next().await {
        let mut next = take_held(&mut held, &key);
        if shared.spool.is_empty() {
            if let Some(queued) = next.pop_front() {
                in_flight.push(Arc::clone(&shared).deliver(queued, closing.clone()));
            }
            held.extend(next);
        } else if !next.is_empty() {
            // Their elder may be in the spool: behind it, replayed in order below.
            shared.spool_queued(next.into()).await;
        }
    }
    // Nothing is held once nothing is in flight; should anything be, the spool keeps it.
    if !held.is_empty() {
        shared.spool_queued(held.drain(..).collect()).await;
    }
    if !shared.spool.is_empty() {
        // What does not make it within the deadline is replayed at the next start.
        let deadline = Instant::now() + SHUTDOWN_REPLAY;
        shared.replay(|| Instant::now() >= deadline).await;
        if !shared.spool.is_empty() {
            tracing::warn!(records = shared.spool.len(), spool = %shared.spool.path().display(),
                "records left in the spool; they are replayed at the next start");
        }
    }
}

/// The held records of document `key`, in arrival order, out of `held`.
fn take_held(held: &mut VecDeque<Queued>, key: &Key) -> VecDeque<Queued> {
    let (mine, rest) = held.drain(..).partition(|q| q.key() == *key);
    *held = rest;
    mine
}

impl Recorder {
    /// Starts the writer task for `store`, spooling to `spool`, with a queue of `capacity`.
    /// Records already in the spool are replayed first. With a `journal`, every record is on
    /// disk before [`Recorder::record`] returns.
    pub fn start(
        store: Arc<dyn RecordStore>,
        spool: Arc<Spool>,
        journal: Option<Journal>,
        capacity: usize,
        policy: RetryPolicy,
        latency: Histogram<f64>,
    ) -> (Self, RecorderTask) {
        let (tx, rx) = mpsc::channel::<Queued>(capacity);
        if !spool.is_empty() {
            tracing::info!(records = spool.len(), spool = %spool.path().display(),
                "replaying spooled records");
        }
        let store_kind = store
            .describe()
            .split(':')
            .next()
            .unwrap_or("store")
            .to_owned();
        let shared = Arc::new(Shared {
            store,
            spool,
            journal,
            policy,
            stats: Stats::default(),
            latency,
            store_kind,
            wake: Notify::new(),
        });
        let close = CancellationToken::new();
        // Owned by the returned `RecorderTask`, whose `finish` awaits it.
        #[allow(clippy::disallowed_methods)]
        let handle = tokio::spawn(writer(Arc::clone(&shared), rx, close.clone()));
        (
            Self {
                tx,
                shared: Arc::clone(&shared),
            },
            RecorderTask {
                handle,
                close,
                shared,
            },
        )
    }

    /// Journals a record (when the journal is on: returns once it is on disk, a few
    /// milliseconds at most) and queues it; never waits for the store. A full queue spills to
    /// the spool. Call it before the client hears the turn's end: then a crash cannot lose a
    /// turn the client saw end.
    pub async fn record(&self, record: TurnRecord) {
        let entry = match &self.shared.journal {
            None => None,
            Some(journal) => match journal.write(&record).await {
                Ok(entry) => {
                    self.shared.journal_error().take();
                    Some(entry)
                }
                Err(e) => {
                    // The record goes on without it; the queue, the store and the spool remain.
                    *self.shared.journal_error() = Some(e.to_string());
                    None
                }
            },
        };
        match self
            .tx
            .try_send(Queued::new(record, &self.shared.store_kind, entry))
        {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(queued)) => {
                tracing::warn!(turn_id = %queued.record.id, "record queue full; spooling");
                self.shared.spool_queued(vec![queued]).await;
                self.shared.wake.notify_one();
            }
            Err(mpsc::error::TrySendError::Closed(queued)) => {
                self.shared.spool_queued(vec![queued]).await;
            }
        }
    }

    /// Records spooled since start (the spool's depth is in [`Recorder::status`]).
    pub fn spooled_total(&self) -> u64 {
        self.shared.stats.spooled.load(Ordering::Relaxed)
    }

    /// Whether the store is failing or records wait in the spool: two atomic reads, cheap
    /// enough for every turn.
    pub fn is_degraded(&self) -> bool {
        self.shared.stats.degraded.load(Ordering::Relaxed) || !self.shared.spool.is_empty()
    }

    /// Records that only the error log holds, since start.
    pub fn logged_only(&self) -> u64 {
        self.shared.stats.logged_only.load(Ordering::Relaxed)
    }

    /// The record path's state.
    pub fn status(&self) -> RecorderStatus {
        let s = &self.shared.stats;
        let last = s
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        RecorderStatus {
            state: if self.is_degraded() || self.shared.journal_error().is_some() {
                RecorderState::Degraded
            } else {
                RecorderState::Ok
            },
            queued: self.tx.max_capacity() - self.tx.capacity(),
            spooled: self.shared.spool.len(),
            written: s.written.load(Ordering::Relaxed),
            retried: s.retried.load(Ordering::Relaxed),
            replayed: s.replayed.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
            spool_bytes: self.shared.spool.bytes(),
            spool_error: self.shared.spool_error().clone(),
            logged_only: s.logged_only.load(Ordering::Relaxed),
            journaled: self.shared.journal.as_ref().map_or(0, Journal::records),
            journal_fsyncs: self.shared.journal.as_ref().map_or(0, Journal::fsyncs),
            journal_error: self.shared.journal_error().clone(),
            last_error_at: last.as_ref().map(|(_, at)| at.clone()),
            last_error: last.map(|(e, _)| e),
        }
    }
}

impl RecorderTask {
    /// Stops taking records and waits until every queued one is in the store or the spool.
    /// Call it once the turns that could still record have ended.
    pub async fn finish(self) {
        self.close.cancel();
        if let Err(e) = self.handle.await {
            tracing::error!(error = %e, "record writer task failed");
        }
        // Every record is in the store or the spool: the journal has nothing left to keep.
        if let Some(journal) = &self.shared.journal {
            journal.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::spool::tests::front_ids;
    use crate::store::tests::record;
    use async_trait::async_trait;

    /// A store that fails while `down` is set, counting writes per id.
    #[derive(Default)]
    struct Flaky {
        down: AtomicBool,
        /// Fail the next call only (transient).
        fail_once: AtomicBool,
        rejected_id: Option<String>,
        writes: Mutex<Vec<String>>,
        /// The last record written, per id.
        last: Mutex<std::collections::HashMap<String, TurnRecord>>,
    }

    #[async_trait]
    impl RecordStore for Flaky {
        async fn put(&self, record: &TurnRecord) -> Result<(), StoreError> {
            if self.rejected_id.as_deref() == Some(record.id.as_str()) {
                return Err(StoreError::Rejected("too large".into()));
            }
            if self.down.load(Ordering::SeqCst) || self.fail_once.swap(false, Ordering::SeqCst) {
                return Err(StoreError::Transient {
                    message: "429".into(),
                    retry_after: Some(Duration::from_millis(5)),
                });
            }
            self.writes.lock().expect("lock").push(record.id.clone());
            self.last
                .lock()
                .expect("lock")
                .insert(record.id.clone(), record.clone());
            Ok(())
        }
        async fn conversation(&self, _: &str, _: usize) -> Result<Vec<TurnRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn latency() -> Histogram<f64> {
        crate::telemetry::Metrics::local().record_latency()
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            budget: Duration::from_millis(50),
            attempt_timeout: Duration::from_secs(1),
            base: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
        }
    }

    /// Polls `done` every 10 ms (real time: the spool's file work runs on real threads) for up
    /// to 10 s.
    async fn eventually(what: &str, done: impl Fn() -> bool) {
        let t = std::time::Instant::now();
        while !done() {
            assert!(t.elapsed() < Duration::from_secs(10), "timed out: {what}");
            sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn backoff_doubles_from_the_base_with_half_of_it_random_and_is_capped() {
        let p = RetryPolicy::default(); // 100 ms doubling, capped at 10 s
        let ms = |attempt| p.backoff(attempt).as_millis();
        let bounds = [
            (0, 50, 100),
            (1, 100, 200),
            (3, 400, 800),
            (7, 5_000, 10_000),
        ];
        for (attempt, low, high) in bounds {
            for _ in 0..50 {
                let b = ms(attempt);
                assert!((low..=high).contains(&b), "attempt {attempt}: {b} ms");
            }
        }
        assert!(ms(40) <= 10_000, "capped however many attempts");
        let seen: std::collections::HashSet<_> = (0..50).map(|_| ms(3)).collect();
        assert!(seen.len() > 5, "jittered, not fixed: {seen:?}");
    }

    #[tokio::test]
    async fn records_that_arrive_during_an_outage_are_replayed_once_in_arrival_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Arc::new(Spool::open(dir.path(), "t", 1 << 30).expect("spool"));
        let store = Arc::new(Flaky::default());
        store.down.store(true, Ordering::SeqCst);
        let (recorder, task) =
            Recorder::start(store.clone(), spool.clone(), None, 64, policy(), latency());
        // The first record runs out of retry budget and is spooled; the rest queue behind it.
        recorder.record(record("c", "r0")).await;
        eventually("r0 is spooled", || spool.len() == 1).await;
        assert!(recorder.is_degraded());
        assert_eq!(recorder.status().state, RecorderState::Degraded);
        for i in 1..10 {
            recorder.record(record("c", &format!("r{i}"))).await;
        }
        eventually("all ten are spooled", || spool.len() == 10).await;
        assert!(store.writes.lock().expect("lock").is_empty());
        store.down.store(false, Ordering::SeqCst);
        eventually("the spool is replayed", || spool.is_empty()).await;
        task.finish().await;
        let writes = store.writes.lock().expect("lock").clone();
        let expected: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
        assert_eq!(writes, expected, "each once, in the order they arrived");
        assert!(!recorder.is_degraded());
        assert_eq!(recorder.status().state, RecorderState::Ok);
        assert_eq!(recorder.status().replayed, 10);
    }

    #[tokio::test]
    async fn a_later_record_of_the_same_turn_is_written_after_the_earlier_one() {
        // The turn's record meets a throttled store and waits to retry; its rated version
        // (feedback) arrives meanwhile. Written at once, it would land first and the retry
        // would overwrite the rating.
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Arc::new(Spool::open(dir.path(), "t", 1 << 30).expect("spool"));
        let store = Arc::new(Flaky::default());
        store.fail_once.store(true, Ordering::SeqCst);
        let (recorder, task) =
            Recorder::start(store.clone(), spool.clone(), None, 64, policy(), latency());
        let original = record("c", "r0");
        recorder.record(original.clone()).await;
        let rated = TurnRecord {
            feedback: Some(crate::store::TurnFeedback {
                rating: crate::chat::protocol::Rating::Down,
                comment: Some("wrong keeper".into()),
                at: now_rfc3339(),
            }),
            ..original
        };
        recorder.record(rated.clone()).await;
        recorder.record(record("c", "other")).await;
        task.finish().await;
        let writes = store.writes.lock().expect("lock").clone();
        assert_eq!(
            writes.iter().filter(|id| *id == "r0").count(),
            2,
            "both versions written: {writes:?}"
        );
        assert_eq!(
            store.last.lock().expect("lock").get("r0"),
            Some(&rated),
            "the rating is not overwritten by the retried original"
        );
        assert_eq!(spool.len(), 0);
    }

    #[tokio::test]
    async fn ratings_that_wait_behind_a_spooled_record_follow_it_in_order() {
        // The store is down: the turn's record runs out of retries and is spooled while two
        // ratings of it wait. Both go to the spool behind it, in order; the last one wins.
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Arc::new(Spool::open(dir.path(), "t", 1 << 30).expect("spool"));
        let store = Arc::new(Flaky::default());
        store.down.store(true, Ordering::SeqCst);
        let (recorder, task) =
            Recorder::start(store.clone(), spool.clone(), None, 64, policy(), latency());
        let original = record("c", "r0");
        let rated = |rating, comment: &str| TurnRecord {
            feedback: Some(crate::store::TurnFeedback {
                rating,
                comment: Some(comment.into()),
                at: now_rfc3339(),
            }),
            ..original.clone()
        };
        let (first, last) = (
            rated(crate::chat::protocol::Rating::Up, "first"),
            rated(crate::chat::protocol::Rating::Down, "changed my mind"),
        );
        recorder.record(original.clone()).await;
        recorder.record(first).await;
        recorder.record(last.clone()).await;
        eventually("all three are spooled", || spool.len() == 3).await;
        store.down.store(false, Ordering::SeqCst);
        eventually("the spool is replayed", || spool.is_empty()).await;
        task.finish().await;
        assert_eq!(store.writes.lock().expect("lock").len(), 3);
        assert_eq!(store.last.lock().expect("lock").get("r0"), Some(&last));
    }

    #[tokio::test]
    async fn an_overflowing_queue_spools_instead_of_dropping() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Arc::new(Spool::open(dir.path(), "t", 1 << 30).expect("spool"));
        let store = Arc::new(Flaky::default());
        store.down.store(true, Ordering::SeqCst);
        let (recorder, task) =
            Recorder::start(store.clone(), spool.clone(), None, 2, policy(), latency());
        for i in 0..30 {
            recorder.record(record("c", &format!("r{i}"))).await;
        }
        eventually("every record is on disk", || spool.len() == 30).await;
        store.down.store(false, Ordering::SeqCst);
        eventually("the spool is replayed", || spool.is_empty()).await;
        task.finish().await;
        let mut writes = store.writes.lock().expect("lock").clone();
        assert_eq!(writes.len(), 30, "none twice: {writes:?}");
        writes.sort();
        writes.dedup();
        assert_eq!(writes.len(), 30, "none lost");
    }

    #[tokio::test]
    async fn spooled_records_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Flaky::default());
        store.down.store(true, Ordering::SeqCst);
        {
            let spool = Arc::new(Spool::open(dir.path(), "t", 1 << 30).expect("spool"));
            let (recorder, task) =
                Recorder::start(store.clone(), spool, None, 8, policy(), latency());
            for i in 0..3 {
                recorder.record(record("c", &format!("r{i}"))).await;
            }
            task.finish().await;
        }
        store.down.store(false, Ordering::SeqCst);
        let spool = Arc::new(Spool::open(dir.path(), "t", 1 << 30).expect("spool"));
        assert_eq!(spool.len(), 3);
        let (_recorder, task) =
            Recorder::start(store.clone(), spool.clone(), None, 8, policy(), latency());
        task.finish().await;
        assert!(spool.is_empty());
        // Records that were in flight together may spool in either order; each arrives once.
        let mut writes = store.writes.lock().expect("lock").clone();
        writes.sort();
        assert_eq!(writes, ["r0", "r1", "r2"]);
    }

    #[tokio::test]
    async fn when_even_the_spool_cannot_take_a_record_it_is_logged_counted_and_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A spool that holds nothing, as on a full disk.
        let spool = Arc::new(Spool::open(dir.path(), "t", 10).expect("spool"));
        let store = Arc::new(Flaky::default());
        store.down.store(true, Ordering::SeqCst);
        let (recorder, task) =
            Recorder::start(store.clone(), spool.clone(), None, 8, policy(), latency());
        recorder.record(record("c", "r0")).await;
        eventually("the record is given up to the log", || {
            recorder.logged_only() == 1
        })
        .await;
        let status = recorder.status();
        assert_eq!(status.state, RecorderState::Degraded);
        let error = status.spool_error.expect("the reason is reported");
        assert!(error.contains("spool is full"), "{error}");
        assert!(spool.is_empty());
        task.finish().await;
    }

    #[tokio::test]
    async fn a_journaled_record_that_only_the_log_took_comes_back_at_the_next_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal_files = || crate::store::journal::tests::journal_files(dir.path()).len();
        {
            // The store takes one record; then it is down and the spool is full.
            let spool = Arc::new(Spool::open(dir.path(), "t", 10).expect("spool"));
            let journal = Journal::start(&spool).expect("journal");
            let store = Arc::new(Flaky::default());
            let (recorder, task) =
                Recorder::start(store.clone(), spool, Some(journal), 8, policy(), latency());
            recorder.record(record("c", "stored")).await;
            eventually("the store has it", || {
                store.writes.lock().expect("lock").len() == 1
            })
            .await;
            store.down.store(true, Ordering::SeqCst);
            recorder.record(record("c", "logged")).await;
            eventually("given up to the log", || recorder.logged_only() == 1).await;
            assert_eq!(recorder.status().journaled, 2);
            task.finish().await;
            assert_eq!(
                journal_files(),
                1,
                "the journal keeps what only the log has"
            );
        }
        let spool = Spool::open(dir.path(), "t", 1 << 20).expect("reopen");
        // The stored record was in the same segment: written again, harmlessly (an upsert).
        assert_eq!(front_ids(&spool, 10), ["stored", "logged"]);
        assert_eq!(journal_files(), 0);
    }

    #[tokio::test]
    async fn a_rejected_record_is_set_aside_and_does_not_block_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Arc::new(Spool::open(dir.path(), "t", 1 << 30).expect("spool"));
        let store = Arc::new(Flaky {
            rejected_id: Some("bad".into()),
            ..Flaky::default()
        });
        let (recorder, task) =
            Recorder::start(store.clone(), spool.clone(), None, 8, policy(), latency());
        recorder.record(record("c", "bad")).await;
        recorder.record(record("c", "good")).await;
        task.finish().await;
        assert_eq!(*store.writes.lock().expect("lock"), ["good"]);
        assert_eq!(recorder.status().rejected, 1);
        let aside = std::fs::read_to_string(dir.path().join("rejected.jsonl")).expect("file");
        assert!(aside.contains("\"bad\""));
    }
}
