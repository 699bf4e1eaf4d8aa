//! SQLite record store: one row per turn holding the record's JSON, keyed by conversation and
//! turn id (a turn id reused in another conversation is another turn, never an overwrite).

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
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(backend)?;
        migrate(&conn).map_err(backend)?;
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

/// Creates the table, or moves one keyed by turn id alone (before ragchat keyed records by
/// conversation too) to the new key, keeping every row.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    const TABLE: &str = "CREATE TABLE IF NOT EXISTS turns (
             conversation_id TEXT NOT NULL,
             id TEXT NOT NULL,
             created_at TEXT NOT NULL,
             record TEXT NOT NULL,
             PRIMARY KEY (conversation_id, id)
         );
         CREATE INDEX IF NOT EXISTS turns_by_conversation ON turns (conversation_id, created_at);
         CREATE INDEX IF NOT EXISTS turns_by_time ON turns (created_at);";
    let keyed_by_id_alone: bool = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('turns') WHERE name = 'conversation_id' \
             AND pk = 0",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)?;
    if keyed_by_id_alone {
        tracing::info!("moving the turn records to their new key (conversation, turn id)");
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;
             ALTER TABLE turns RENAME TO turns_by_id;
             DROP INDEX IF EXISTS turns_by_conversation;
             DROP INDEX IF EXISTS turns_by_time;
             {TABLE}
             INSERT INTO turns (conversation_id, id, created_at, record)
                 SELECT conversation_id, id, created_at, record FROM turns_by_id ORDER BY rowid;
             DROP TABLE turns_by_id;
             COMMIT;"
        ))
    } else {
        conn.execute_batch(TABLE)
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
                 ON CONFLICT(conversation_id, id) DO UPDATE SET
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::record;

    #[tokio::test]
    async fn a_turn_id_reused_in_another_conversation_is_another_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("r.sqlite")).expect("open");
        store.put(&record("conv-a", "t1")).await.expect("put");
        let mut other = record("conv-b", "t1");
        other.answer = "another answer".into();
        store.put(&other).await.expect("put");
        let a = store.conversation("conv-a", 10).await.expect("read");
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].answer, "answer t1", "not overwritten by conv-b's t1");
        assert_eq!(
            store.conversation("conv-b", 10).await.expect("read")[0].answer,
            "another answer"
        );
    }

    #[tokio::test]
    async fn a_database_keyed_by_turn_id_alone_is_moved_to_the_new_key_with_every_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.sqlite");
        {
            // The table as ragchat made it before.
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(
                "CREATE TABLE turns (id TEXT PRIMARY KEY, conversation_id TEXT NOT NULL,
                     created_at TEXT NOT NULL, record TEXT NOT NULL);
                 CREATE INDEX turns_by_conversation ON turns (conversation_id, created_at);
                 CREATE INDEX turns_by_time ON turns (created_at);",
            )
            .expect("old schema");
            for id in ["t1", "t2"] {
                let r = record("conv-a", id);
                let json = serde_json::to_string(&r).expect("json");
                conn.execute(
                    "INSERT INTO turns VALUES (?1, ?2, ?3, ?4)",
                    params![r.id, r.conversation_id, r.created_at, json],
                )
                .expect("row");
            }
        }
        let store = SqliteStore::open(&path).expect("migrates");
        let ids: Vec<String> = store
            .conversation("conv-a", 10)
            .await
            .expect("read")
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["t2", "t1"], "every row, newest first");
        drop(store);
        SqliteStore::open(&path).expect("opens again without migrating twice");
    }
}
