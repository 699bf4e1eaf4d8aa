//! The record queue: turns hand their record to a bounded queue and move on; one writer task
//! drains it into the store, so a slow store never delays tokens or `done`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{RecordStore, TurnRecord};

/// Sends records to the writer task.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<TurnRecord>,
    stats: Arc<Stats>,
}

/// Counters for `/health`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records written.
    pub written: AtomicU64,
    /// Records the store refused (logged with their JSON so they can be replayed).
    pub failed: AtomicU64,
}

/// The writer task; await [`RecorderTask::finish`] at shutdown to flush the queue.
pub struct RecorderTask {
    handle: JoinHandle<()>,
    close: CancellationToken,
}

async fn write(store: &dyn RecordStore, stats: &Stats, record: TurnRecord) {
    match store.put(&record).await {
        Ok(()) => {
            stats.written.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            // Logged whole so that no turn is lost even when the store is.
            let json = serde_json::to_string(&record).unwrap_or_default();
            tracing::error!(error = %e, turn_id = %record.id, record = %json,
                "could not write the turn record");
        }
    }
}

impl Recorder {
    /// Starts the writer task for `store` with a queue of `capacity` records.
    pub fn start(store: Arc<dyn RecordStore>, capacity: usize) -> (Self, RecorderTask) {
        let (tx, mut rx) = mpsc::channel::<TurnRecord>(capacity);
        let stats = Arc::new(Stats::default());
        let task_stats = Arc::clone(&stats);
        let close = CancellationToken::new();
        let closing = close.clone();
        let handle = tokio::spawn(async move {
            loop {
                let record = tokio::select! {
                    biased;
                    record = rx.recv() => record,
                    () = closing.cancelled() => {
                        // Refuse new records, then drain what is queued.
                        rx.close();
                        rx.recv().await
                    }
                };
                let Some(record) = record else { break };
                write(store.as_ref(), &task_stats, record).await;
            }
        });
        (Self { tx, stats }, RecorderTask { handle, close })
    }

    /// Queues a record. Waits only when the queue is full.
    pub async fn record(&self, record: TurnRecord) {
        if let Err(mpsc::error::SendError(record)) = self.tx.send(record).await {
            let json = serde_json::to_string(&record).unwrap_or_default();
            tracing::error!(turn_id = %record.id, record = %json,
                "record writer is gone; logging the record instead");
        }
    }

    /// Records waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

impl RecorderTask {
    /// Stops taking records and waits until every queued one is written. Call it once the
    /// turns that could still record have ended.
    pub async fn finish(self) {
        self.close.cancel();
        if let Err(e) = self.handle.await {
            tracing::error!(error = %e, "record writer task failed");
        }
    }
}
