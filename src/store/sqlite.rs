//! SQLite record store: one row per turn holding the record's JSON, keyed by turn id.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::{RecordListing, RecordStore, StoreError, TurnRecord};

/// A SQLite file.
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: String,
}

// A local file: every failure (busy, disk full, permissions) may clear, so retry and spool.
fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::transient(format!("sqlite: {e}"))
}

impl SqliteStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(backend)?;
        }
        let conn = Connection::open(path).map_err(backend)?;
        // WAL lets `ragchat records` read while the server writes; NORMAL sync is durable across
        // process crashes, which is what a record must survive.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS turns (
                 id TEXT PRIMARY KEY,
                 conversation_id TEXT NOT NULL,
                 created_at TEXT NOT NULL,
                 record TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS turns_by_conversation
                 ON turns (conversation_id, created_at);
             CREATE INDEX IF NOT EXISTS turns_by_time ON turns (created_at);",
        )
        .map_err(backend)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: path.display().to_string(),
        })
    }

    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let conn = conn
                .lock()
                .map_err(|_| backend("connection lock poisoned"))?;
            f(&conn)
        })
        .await
        .map_err(backend)?
    }
}

fn parse(json: String) -> Result<TurnRecord, StoreError> {
    serde_json::from_str(&json).map_err(|e| StoreError::Rejected(format!("stored record: {e}")))
}

#[async_trait]
impl RecordStore for SqliteStore {
    async fn put(&self, record: &TurnRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).map_err(backend)?;
        let (id, conversation, created) = (
            record.id.clone(),
            record.conversation_id.clone(),
            record.created_at.clone(),
        );
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO turns (id, conversation_id, created_at, record) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET conversation_id = excluded.conversation_id,
                     created_at = excluded.created_at, record = excluded.record",
                params![id, conversation, created, json],
            )
            .map(drop)
            .map_err(backend)
        })
        .await
    }

    async fn conversation(
        &self,
        conversation_id: &str,
        n: usize,
    ) -> Result<Vec<TurnRecord>, StoreError> {
        let conversation_id = conversation_id.to_owned();
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT record FROM turns WHERE conversation_id = ?1
                     ORDER BY created_at DESC, rowid DESC LIMIT ?2",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![conversation_id, n as i64], |r| {
                    r.get::<_, String>(0)
                })
                .map_err(backend)?;
            rows.map(|r| r.map_err(backend).and_then(parse)).collect()
        })
        .await
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.path)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with_conn(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(backend))
            .await
    }

    fn listing(&self) -> Option<&dyn RecordListing> {
        Some(self)
    }
}

#[async_trait]
impl RecordListing for SqliteStore {
    async fn recent(&self, n: usize) -> Result<Vec<TurnRecord>, StoreError> {
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare("SELECT record FROM turns ORDER BY created_at DESC, rowid DESC LIMIT ?1")
                .map_err(backend)?;
            let rows = stmt
                .query_map([n as i64], |r| r.get::<_, String>(0))
                .map_err(backend)?;
            rows.map(|r| r.map_err(backend).and_then(parse)).collect()
        })
        .await
    }
}
