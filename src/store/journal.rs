//! The record journal: every turn's record on local disk, fsynced, before the client gets its
//! `done`, so a turn whose answer was delivered survives a crash (SIGKILL, an OOM kill, a host
//! failure) as long as the data dir does. The record path goes on as before (queue, store,
//! spool); once the store or the spool holds a record, its journal entry is settled, and a
//! segment file whose entries are all settled is deleted.
//!
//! Writes are group-committed on the journal's own thread: one `fdatasync` for whatever arrived
//! since the last one, at most one every [`GROUP_COMMIT`] — never per token, never per turn
//! under load. A record waits at most that long plus one fsync. Files are
//! `journal-<spool slot>.<n>.jsonl` (the spool's line format) in the spool dir, rolled at
//! [`SEGMENT_BYTES`]; at start, [`Spool::open`](super::Spool::open) moves the journals of this
//! slot and of stopped processes into the spool, which replays them (stores upsert by id: a
//! record the store already had is written again, harmlessly).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{Spool, TurnRecord};

/// The shortest time between two fsyncs; also the longest a record waits for the next one
/// (plus the fsync itself).
pub const GROUP_COMMIT: Duration = Duration::from_millis(5);
/// A segment file is closed for new entries past this size, and deleted once all are settled.
pub const SEGMENT_BYTES: u64 = 1024 * 1024;

/// Appends records durably; see the module docs.
pub struct Journal {
    tx: mpsc::Sender<Msg>,
    counters: Arc<Counters>,
}

/// What the journal has done since start.
#[derive(Default)]
struct Counters {
    records: AtomicU64,
    fsyncs: AtomicU64,
}

/// A journaled record not yet in the store or the spool. Dropping it settles the entry: drop
/// it only once the record is safe elsewhere (or the process gave up on it).
pub struct Entry {
    segment: Arc<Segment>,
}

struct Segment {
    n: u64,
    outstanding: AtomicUsize,
    /// Tells the writer when the last entry is settled (read at its next wake-up).
    settled: mpsc::Sender<u64>,
}

impl Entry {
    /// Leaves the entry unsettled for good, for a record that neither the store nor the spool
    /// took (only the error log has it): the journal keeps it, and the next start moves it into
    /// the spool.
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if self.segment.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = self.segment.settled.send(self.segment.n);
        }
    }
}

type Reply = oneshot::Sender<io::Result<Entry>>;

enum Msg {
    Write(Vec<u8>, Reply),
    Close(oneshot::Sender<()>),
}

/// The file name of segment `n` of spool slot `name`.
pub(super) fn segment_name(name: &str, n: u64) -> String {
    format!("journal-{name}.{n}.jsonl")
}

/// The spool slot and segment number of a journal file name.
pub(super) fn parse_segment_name(file: &str) -> Option<(&str, u64)> {
    let (name, n) = file
        .strip_prefix("journal-")?
        .strip_suffix(".jsonl")?
        .rsplit_once('.')?;
    Some((name, n.parse().ok()?))
}

impl Journal {
    /// Starts the journal of `spool`'s slot (whose old journals `Spool::open` already took).
    pub fn start(spool: &Spool) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let (settled_tx, settled) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let (dir, name) = (spool.dir(), spool.name());
        // After any segment a failed fold left behind (the next start takes it).
        let next = leftovers(dir, name, |_| Ok(false))?
            .iter()
            .filter_map(|p| parse_segment_name(p.file_name()?.to_str()?).map(|(_, n)| n + 1))
            .max()
            .unwrap_or(0);
        let mut writer = Writer {
            dir: dir.to_owned(),
            name: name.to_owned(),
            current: None,
            closed: HashMap::new(),
            next,
            settled_tx,
            settled,
            counters: Arc::clone(&counters),
        };
        writer.roll()?;
        std::thread::Builder::new()
            .name("record-journal".into())
            .spawn(move || writer.run(&rx))?;
        Ok(Self { tx, counters })
    }

    /// Appends `record` and returns once it is on disk (fsynced).
    pub async fn write(&self, record: &TurnRecord) -> io::Result<Entry> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        let (reply, done) = oneshot::channel();
        self.tx
            .send(Msg::Write(line, reply))
            .map_err(|_| io::Error::other("the record journal has stopped"))?;
        done.await
            .map_err(|_| io::Error::other("the record journal has stopped"))?
    }

    /// Records journaled since start.
    pub fn records(&self) -> u64 {
        self.counters.records.load(Ordering::Relaxed)
    }

    /// fsyncs since start.
    pub fn fsyncs(&self) -> u64 {
        self.counters.fsyncs.load(Ordering::Relaxed)
    }

    /// At shutdown, once every entry is settled: deletes the settled segments and stops the
    /// thread. Segments with unsettled entries stay for the next start.
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Msg::Close(reply)).is_ok() {
            let _ = done.await;
        }
    }
}

/// The journal's thread: owns the files.
struct Writer {
    dir: PathBuf,
    name: String,
    /// The segment taking entries, its file and size.
    current: Option<(Arc<Segment>, File, u64)>,
    /// Closed segments with unsettled entries.
    closed: HashMap<u64, Arc<Segment>>,
    next: u64,
    settled_tx: mpsc::Sender<u64>,
    settled: mpsc::Receiver<u64>,
    counters: Arc<Counters>,
}

impl Writer {
    fn path(&self, n: u64) -> PathBuf {
        self.dir.join(segment_name(&self.name, n))
    }

    fn run(mut self, rx: &mpsc::Receiver<Msg>) {
        let mut last_sync: Option<Instant> = None;
        while let Ok(first) = rx.recv() {
            let mut writes = Vec::new();
            let mut close = None;
            Self::take(first, &mut writes, &mut close);
            if !writes.is_empty()
                && let Some(last) = last_sync
            {
                // Group commit: whatever else arrives meanwhile shares this fsync.
                std::thread::sleep(GROUP_COMMIT.saturating_sub(last.elapsed()));
            }
            while let Ok(msg) = rx.try_recv() {
                Self::take(msg, &mut writes, &mut close);
            }
            self.delete_settled();
            if !writes.is_empty() {
                self.commit(writes);
                last_sync = Some(Instant::now());
            }
            if let Some(reply) = close {
                self.close();
                let _ = reply.send(());
                return;
            }
        }
    }

    fn take(msg: Msg, writes: &mut Vec<(Vec<u8>, Reply)>, close: &mut Option<oneshot::Sender<()>>) {
        match msg {
            Msg::Write(line, reply) => writes.push((line, reply)),
            Msg::Close(reply) => *close = Some(reply),
        }
    }

    /// Deletes the closed segments whose last entry was settled since the last look.
    fn delete_settled(&mut self) {
        while let Ok(n) = self.settled.try_recv() {
            if self
                .closed
                .get(&n)
                .is_some_and(|s| s.outstanding.load(Ordering::Acquire) == 0)
            {
                self.closed.remove(&n);
                self.remove(n);
            }
        }
    }

    /// Writes the lines, fsyncs once, and answers each writer.
    fn commit(&mut self, writes: Vec<(Vec<u8>, Reply)>) {
        if self.current.as_ref().is_none_or(|c| c.2 >= SEGMENT_BYTES)
            && let Err(e) = self.roll()
        {
            return fail(writes, &e);
        }
        let Some((segment, file, size)) = self.current.as_mut() else {
            return fail(writes, &io::Error::other("no journal segment"));
        };
        let buf: Vec<u8> = writes.iter().flat_map(|(l, _)| l.iter().copied()).collect();
        if let Err(e) = file.write_all(&buf).and_then(|()| file.sync_data()) {
            // Leave no partial line behind (disk full): the records go on without the journal.
            let _ = file.set_len(*size);
            return fail(writes, &e);
        }
        *size += buf.len() as u64;
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.counters
            .records
            .fetch_add(writes.len() as u64, Ordering::Relaxed);
        for (_, reply) in writes {
            segment.outstanding.fetch_add(1, Ordering::AcqRel);
            // A writer that went away drops the entry, which settles it.
            let _ = reply.send(Ok(Entry {
                segment: Arc::clone(segment),
            }));
        }
    }

    /// Closes the current segment (deleted now if settled, else when it is) and opens the next.
    fn roll(&mut self) -> io::Result<()> {
        let n = self.next;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(n))?;
        // The new file's name must survive a crash too.
        File::open(&self.dir)?.sync_all()?;
        self.next += 1;
        let segment = Arc::new(Segment {
            n,
            outstanding: AtomicUsize::new(0),
            settled: self.settled_tx.clone(),
        });
        if let Some((old, _, _)) = self.current.replace((segment, file, 0)) {
            self.retire(old);
        }
        Ok(())
    }

    fn retire(&mut self, segment: Arc<Segment>) {
        if segment.outstanding.load(Ordering::Acquire) == 0 {
            self.remove(segment.n);
        } else {
            self.closed.insert(segment.n, segment);
        }
    }

    fn close(&mut self) {
        self.delete_settled();
        if let Some((segment, _, _)) = self.current.take() {
            self.retire(segment);
        }
        let left: Vec<u64> = self
            .closed
            .values()
            .filter(|s| s.outstanding.load(Ordering::Acquire) == 0)
            .map(|s| s.n)
            .collect();
        for n in left {
            self.closed.remove(&n);
            self.remove(n);
        }
        if !self.closed.is_empty() {
            tracing::warn!(segments = self.closed.len(), dir = %self.dir.display(),
                "journal segments with unsettled records stay; the next start replays them");
        }
    }

    fn remove(&self, n: u64) {
        if let Err(e) = fs::remove_file(self.path(n))
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, segment = n, "cannot delete a settled journal segment");
        }
    }
}

fn fail(writes: Vec<(Vec<u8>, Reply)>, error: &io::Error) {
    tracing::error!(error = %error, records = writes.len(),
        "cannot journal turn records; they go on to the store without it");
    for (_, reply) in writes {
        let _ = reply.send(Err(io::Error::new(error.kind(), error.to_string())));
    }
}

/// The journal files in `dir` whose slot is `name` or whose owner is gone (`free(slot)` says
/// so), oldest segment first.
pub(super) fn leftovers(
    dir: &Path,
    name: &str,
    mut free: impl FnMut(&str) -> io::Result<bool>,
) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some((slot, n)) = path
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(parse_segment_name)
        else {
            continue;
        };
        if slot == name || free(slot)? {
            found.push((slot.to_owned(), n, path.clone()));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, _, path)| path).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::spool::tests::front_ids;
    use crate::store::tests::record;

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(
            parse_segment_name(&segment_name("web-1_a", 12)),
            Some(("web-1_a", 12))
        );
        assert_eq!(parse_segment_name("records-web.jsonl"), None);
        assert_eq!(parse_segment_name("journal-web.x.jsonl"), None);
    }

    /// The journal files in `dir`, sorted.
    pub(crate) fn journal_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("journal-"))
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_journaled_record_is_on_disk_until_settled_then_the_closed_journal_is_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), "test", 1 << 20).expect("spool");
        let journal = Journal::start(&spool).expect("journal");
        let entry = journal.write(&record("c", "a")).await.expect("journaled");
        let files = journal_files(dir.path());
        assert_eq!(files.len(), 1, "{files:?}");
        let text = fs::read_to_string(dir.path().join(&files[0])).expect("read");
        let back: TurnRecord = serde_json::from_str(text.trim_end()).expect("a record line");
        assert_eq!(back.id, "a");
        assert_eq!((journal.records(), journal.fsyncs()), (1, 1));

        drop(entry);
        journal.close().await;
        assert!(journal_files(dir.path()).is_empty(), "settled and closed");
    }

    #[tokio::test]
    async fn records_written_at_once_share_fsyncs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), "test", 1 << 20).expect("spool");
        let journal = Arc::new(Journal::start(&spool).expect("journal"));
        let writes = (0..200).map(|i| {
            let journal = Arc::clone(&journal);
            async move { journal.write(&record("c", &format!("r{i}"))).await }
        });
        let entries = futures::future::join_all(writes).await;
        assert!(entries.iter().all(Result::is_ok));
        assert_eq!(journal.records(), 200);
        assert!(
            journal.fsyncs() < 20,
            "group commit: {} fsyncs for 200 records",
            journal.fsyncs()
        );
    }

    #[tokio::test]
    async fn an_unsettled_record_survives_into_the_next_start_and_full_segments_roll() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = |id: &str| {
            let mut r = record("c", id);
            r.answer = "x".repeat(300 * 1024);
            r
        };
        {
            let spool = Spool::open(dir.path(), "test", 64 << 20).expect("spool");
            let journal = Journal::start(&spool).expect("journal");
            // Four of ~300 KiB: the fifth entry lands in a second segment.
            let mut settled = Vec::new();
            for i in 0..4 {
                settled.push(journal.write(&big(&format!("s{i}"))).await.expect("ok"));
            }
            let kept = journal.write(&record("c", "kept")).await.expect("ok");
            assert_eq!(journal_files(dir.path()).len(), 2, "rolled at 1 MiB");
            drop(settled);
            // The first segment goes once its entries are settled (the writer sees it on its
            // next message).
            let _more = journal.write(&record("c", "more")).await.expect("ok");
            assert_eq!(journal_files(dir.path()).len(), 1);
            // A crash: `kept` and `more` never settle.
            std::mem::forget(kept);
            std::mem::forget(_more);
        }
        let spool = Spool::open(dir.path(), "test", 64 << 20).expect("reopen");
        assert_eq!(
            front_ids(&spool, 10),
            ["kept", "more"],
            "the journal went into the spool"
        );
        assert!(journal_files(dir.path()).is_empty());
    }
}
