//! The local spool: turn records the store could not take yet, as JSON lines on disk, fsynced,
//! replayed in order once the store answers again (and at start-up).
//!
//! Each process owns one file, `records-<instance>.jsonl`, guarded by an exclusive lock on
//! `records-<instance>.lock` for as long as it runs. At start a process adopts every spool file
//! whose lock is free (a replica that crashed or was replaced on shared storage), so no record
//! is stranded.
//!
//! Replay reads from a head offset kept in `records-<instance>.head` and moves it past what the
//! store took: linear in the spool's size (a batch reads only its own lines). The file is
//! truncated when the head reaches its end, and compacted when the replayed part is large. A
//! crash between a store write and the head's move replays a record twice, which is harmless:
//! stores upsert by id. The spool holds at most `RAGCHAT_SPOOL_MAX_BYTES`; past that, an append
//! fails and the record path logs the record whole (the last place it survives).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::TurnRecord;

/// Compact the file once this much of it has been replayed (and it is over half the file).
const COMPACT_AT: u64 = 16 * 1024 * 1024;

/// Records that could not be written to the store yet.
pub struct Spool {
    dir: PathBuf,
    /// The slot this process locked (`records-<name>.lock`).
    name: String,
    path: PathBuf,
    /// Held for the life of the process; the OS drops the lock if the process dies.
    _lock: File,
    /// Serialises file access; holds the head offset and the end offsets of the records the
    /// last `read_front` returned.
    state: Mutex<Head>,
    len: AtomicU64,
    /// Bytes waiting (after the head).
    bytes: AtomicU64,
    /// Most bytes waiting.
    cap: u64,
}

#[derive(Default)]
struct Head {
    offset: u64,
    ends: Vec<u64>,
}

/// A spooled record that could not be parsed (a torn last line after a power cut, or a file
/// edited by hand); kept aside in `rejected.jsonl`, never dropped silently.
const REJECTED: &str = "rejected.jsonl";

impl Spool {
    /// Opens this process's spool under `dir` (at most `cap` bytes waiting), adopting the files
    /// of processes that are gone.
    pub fn open(dir: &Path, instance: &str, cap: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let base = sanitize(instance);
        let (name, lock) = (1..=64)
            .find_map(|n| {
                let name = if n == 1 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                };
                try_lock(&dir.join(format!("records-{name}.lock")))
                    .ok()
                    .flatten()
                    .map(|lock| (name, lock))
            })
            .ok_or_else(|| io::Error::other("no free spool slot (64 processes share this dir?)"))?;
        let path = dir.join(format!("records-{name}.jsonl"));
        let offset = read_head(&path);
        let spool = Self {
            dir: dir.to_owned(),
            name,
            path,
            _lock: lock,
            state: Mutex::new(Head {
                offset,
                ends: Vec::new(),
            }),
            len: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            cap,
        };
        spool.adopt_orphans()?;
        spool.recount()?;
        spool.adopt_journals()?;
        Ok(spool)
    }

    /// The spool file of this process.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory of the spool (and of the record journal).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This process's slot: the `<name>` of its files.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records waiting.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Head> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts the good records (and the bytes) after the head.
    fn recount(&self) -> io::Result<()> {
        let mut head = self.lock();
        let size = file_len(&self.path)?;
        if head.offset > size {
            head.offset = 0;
        }
        let count = count_good(&self.path, head.offset)?;
        self.len.store(count, Ordering::Relaxed);
        self.bytes.store(size - head.offset, Ordering::Relaxed);
        Ok(())
    }

    /// Appends records and fsyncs before returning: once this returns, they survive a crash.
    /// Fails, writing nothing, when they would take the spool past its cap.
    pub fn append(&self, records: &[TurnRecord]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(records.len() * 1024);
        for record in records {
            serde_json::to_writer(&mut buf, record)?;
            buf.push(b'\n');
        }
        let _head = self.lock();
        if self.bytes() + buf.len() as u64 > self.cap {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "the spool is full ({} bytes waiting, RAGCHAT_SPOOL_MAX_BYTES={})",
                    self.bytes(),
                    self.cap
                ),
            ));
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)?;
        let start = file.metadata()?.len();
        // A torn last line (a crash mid-append) must not swallow the next record.
        if start > 0 && !ends_with_newline(&mut file, start)? {
            buf.insert(0, b'\n');
        }
        let written = file.write_all(&buf).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Leave no partial line behind (disk full): the caller still has the records.
            let _ = file.set_len(start);
            return Err(e);
        }
        self.len.fetch_add(records.len() as u64, Ordering::Relaxed);
        self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Up to `n` records from the head on, oldest first. Unparsable lines (a torn write,
    /// invalid UTF-8, a hand edit) are moved aside and skipped.
    pub fn read_front(&self, n: usize) -> io::Result<Vec<TurnRecord>> {
        let mut head = self.lock();
        let (lines, bad) = self.scan(head.offset, n)?;
        if !bad.is_empty() {
            self.set_aside_lines(&bad)?;
            // Skipped lines before the first good one are behind us for good.
            let skip_to = bad
                .iter()
                .map(|(end, _)| *end)
                .filter(|end| lines.first().is_none_or(|(_, first)| end < first))
                .max();
            if let Some(end) = skip_to {
                head.offset = end;
                write_head(&self.path, end)?;
                self.bytes
                    .store(file_len(&self.path)?.saturating_sub(end), Ordering::Relaxed);
            }
        }
        head.ends = lines.iter().map(|(_, end)| *end).collect();
        Ok(lines.into_iter().map(|(record, _)| record).collect())
    }

    /// Drops the first `n` records of the last `read_front` (the store now holds them): moves
    /// the head past them, truncating or compacting the file when that pays.
    pub fn remove_front(&self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        let mut head = self.lock();
        let Some(&end) = head.ends.get(n - 1) else {
            return Err(io::Error::other(
                "remove_front beyond what read_front returned",
            ));
        };
        head.ends.clear();
        let size = file_len(&self.path)?;
        if end >= size {
            // Everything was replayed: start the file over.
            OpenOptions::new()
                .write(true)
                .open(&self.path)?
                .set_len(0)?;
            head.offset = 0;
        } else if end > COMPACT_AT && end * 2 > size {
            compact(&self.path, end)?;
            head.offset = 0;
        } else {
            head.offset = end;
        }
        write_head(&self.path, head.offset)?;
        self.len.fetch_sub(n as u64, Ordering::Relaxed);
        self.bytes.store(
            file_len(&self.path)?.saturating_sub(head.offset),
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// Up to `n` good records from `offset` on, each with the offset where its line ends, and
    /// the unparsable lines met on the way (with their end offsets).
    #[allow(clippy::type_complexity)]
    fn scan(
        &self,
        offset: u64,
        n: usize,
    ) -> io::Result<(Vec<(TurnRecord, u64)>, Vec<(u64, String)>)> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
            Err(e) => return Err(e),
        };
        let mut reader = BufReader::new(file);
        reader.seek(SeekFrom::Start(offset))?;
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        let mut pos = offset;
        let mut line = Vec::new();
        while good.len() < n {
            line.clear();
            let read = reader.read_until(b'\n', &mut line)?;
            if read == 0 {
                break;
            }
            pos += read as u64;
            let text = trim_line(&line);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<TurnRecord>(text) {
                Ok(record) => good.push((record, pos)),
                // After good records, a bad line waits for the next batch, where it comes first
                // and is moved aside once.
                Err(_) if !good.is_empty() => break,
                Err(_) => bad.push((pos, String::from_utf8_lossy(text).into_owned())),
            }
        }
        Ok((good, bad))
    }

    /// Keeps a record the store refused for good in `rejected.jsonl`, for a human to look at.
    pub fn set_aside_record(&self, record: &TurnRecord) -> io::Result<()> {
        self.set_aside(&[serde_json::to_string(record)?])
    }

    fn set_aside_lines(&self, bad: &[(u64, String)]) -> io::Result<()> {
        if bad.is_empty() {
            return Ok(());
        }
        tracing::error!(lines = bad.len(), file = %self.dir.join(REJECTED).display(),
            "unparsable spool lines moved aside");
        let lines: Vec<String> = bad.iter().map(|(_, l)| l.clone()).collect();
        self.set_aside(&lines)
    }

    fn set_aside(&self, lines: &[String]) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(REJECTED))?;
        for line in lines {
            writeln!(file, "{line}")?;
        }
        file.sync_data()
    }

    /// Moves the unreplayed records of spool files whose owner is gone into ours, then deletes
    /// them.
    fn adopt_orphans(&self) -> io::Result<()> {
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if path == self.path || !name.starts_with("records-") || !name.ends_with(".jsonl") {
                continue;
            }
            let Some(_lock) = try_lock(&path.with_extension("lock"))? else {
                continue; // a live process owns it
            };
            let mut data = Vec::new();
            let mut file = File::open(&path)?;
            let offset = read_head(&path).min(file.metadata()?.len());
            file.seek(SeekFrom::Start(offset))?;
            file.read_to_end(&mut data)?;
            if !data.is_empty() {
                let mut ours = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                ours.write_all(&data)?;
                if !data.ends_with(b"\n") {
                    ours.write_all(b"\n")?;
                }
                ours.sync_data()?;
                tracing::warn!(from = %path.display(), "adopted the spool of a stopped process");
            }
            // The lock file stays: unlinking it would let two processes lock different files
            // of the same name.
            fs::remove_file(&path)?;
            let _ = fs::remove_file(head_path(&path));
        }
        Ok(())
    }
}

impl Spool {
    /// Moves the record journals of this slot (a crash of the process before us) and of
    /// stopped processes into the spool, then deletes them. A journal that does not fit (the
    /// spool is full) stays for the next start.
    fn adopt_journals(&self) -> io::Result<()> {
        let mut held = Vec::new();
        let files = super::journal::leftovers(&self.dir, &self.name, |slot| {
            let lock = try_lock(&self.dir.join(format!("records-{slot}.lock")))?;
            let free = lock.is_some();
            held.extend(lock);
            Ok(free)
        })?;
        for path in files {
            let data = fs::read(&path)?;
            let (mut good, mut bad) = (Vec::new(), Vec::new());
            for line in data.split(|b| *b == b'\n') {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice::<TurnRecord>(line) {
                    Ok(record) => good.push(record),
                    Err(_) => bad.push(String::from_utf8_lossy(line).into_owned()),
                }
            }
            if !bad.is_empty() {
                tracing::error!(lines = bad.len(), file = %self.dir.join(REJECTED).display(),
                    "unparsable journal lines moved aside");
                self.set_aside(&bad)?;
            }
            if good.is_empty() {
                fs::remove_file(&path)?;
                continue;
            }
            if let Err(e) = self.append(&good) {
                tracing::error!(error = %e, journal = %path.display(),
                    "cannot move a record journal into the spool; it stays for the next start");
                continue;
            }
            {
                tracing::warn!(records = good.len(), journal = %path.display(),
                    "records journaled before a crash go to the store again (upserts)");
            }
            fs::remove_file(&path)?;
        }
        Ok(())
    }
}

/// Records that parse, from `offset` to the end.
fn count_good(path: &Path, offset: u64) -> io::Result<u64> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut reader = BufReader::new(file);
    reader.seek(SeekFrom::Start(offset))?;
    let mut count = 0;
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line)? > 0 {
        if serde_json::from_slice::<TurnRecord>(trim_line(&line)).is_ok() {
            count += 1;
        }
        line.clear();
    }
    Ok(count)
}

fn trim_line(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

fn file_len(path: &Path) -> io::Result<u64> {
    match fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

fn head_path(spool: &Path) -> PathBuf {
    spool.with_extension("head")
}

/// The replay offset stored beside a spool file; 0 when there is none or it is unreadable (a
/// replay from the start is harmless).
fn read_head(spool: &Path) -> u64 {
    fs::read_to_string(head_path(spool))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn write_head(spool: &Path, offset: u64) -> io::Result<()> {
    let mut file = File::create(head_path(spool))?;
    write!(file, "{offset}")?;
    file.sync_data()
}

/// Rewrites the spool without its first `from` bytes, atomically (a crash leaves the old or the
/// new file, never a torn one).
fn compact(path: &Path, from: u64) -> io::Result<()> {
    let mut old = File::open(path)?;
    old.seek(SeekFrom::Start(from))?;
    let tmp = path.with_extension("jsonl.tmp");
    {
        let mut new = File::create(&tmp)?;
        io::copy(&mut old, &mut new)?;
        new.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn ends_with_newline(file: &mut File, len: u64) -> io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// Takes an exclusive lock on `path` (created if missing); `None` when another process holds it.
fn try_lock(path: &Path) -> io::Result<Option<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

fn sanitize(instance: &str) -> String {
    let s: String = instance
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() { "local".into() } else { s }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::tests::record;

    /// The ids of up to `n` records from the spool's head.
    pub(crate) fn front_ids(spool: &Spool, n: usize) -> Vec<String> {
        spool
            .read_front(n)
            .expect("read")
            .into_iter()
            .map(|r| r.id)
            .collect()
    }

    #[test]
    fn append_read_remove_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), "a", 1 << 30).expect("open");
        assert!(spool.is_empty());
        spool
            .append(&[record("c", "1"), record("c", "2")])
            .expect("append");
        spool.append(&[record("c", "3")]).expect("append");
        assert_eq!(spool.len(), 3);
        assert_eq!(front_ids(&spool, 2), ["1", "2"]);
        spool.remove_front(2).expect("remove");
        assert_eq!(spool.len(), 1);
        assert_eq!(front_ids(&spool, 10), ["3"]);
    }

    #[test]
    fn a_restarted_process_finds_its_records_and_adopts_orphans() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let a = Spool::open(dir.path(), "a", 1 << 30).expect("open a");
            a.append(&[record("c", "1")]).expect("append");
            let b =
                Spool::open(dir.path(), "a", 1 << 30).expect("same name while a lives: a new slot");
            assert_ne!(a.path(), b.path());
            b.append(&[record("c", "2")]).expect("append");
        }
        // Both owners are gone: a new process with another name adopts both files.
        let c = Spool::open(dir.path(), "c", 1 << 30).expect("open c");
        assert_eq!(c.len(), 2);
        let mut ids = front_ids(&c, 10);
        ids.sort();
        assert_eq!(ids, ["1", "2"]);
    }

    #[test]
    fn replay_reads_only_its_own_batch_and_a_restart_resumes_at_the_head() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let spool = Spool::open(dir.path(), "a", 1 << 30).expect("open");
            let records: Vec<_> = (0..10).map(|i| record("c", &i.to_string())).collect();
            spool.append(&records).expect("append");
            let first = spool.read_front(3).expect("read");
            assert_eq!(first.len(), 3);
            spool.remove_front(3).expect("remove");
            assert_eq!(spool.len(), 7);
            // The file is not rewritten for a batch: it only grows until replayed whole.
            assert!(fs::metadata(spool.path()).expect("file").len() > 0);
        }
        let spool = Spool::open(dir.path(), "a", 1 << 30).expect("reopen");
        assert_eq!(spool.len(), 7, "the head survives the restart");
        assert_eq!(front_ids(&spool, 100), ["3", "4", "5", "6", "7", "8", "9"]);
        spool.remove_front(7).expect("remove");
        assert!(spool.is_empty());
        assert_eq!(
            fs::metadata(spool.path()).expect("file").len(),
            0,
            "truncated when replayed"
        );
    }

    #[test]
    fn a_full_spool_refuses_the_append_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = serde_json::to_string(&record("c", "1"))
            .expect("json")
            .len() as u64
            + 1;
        let spool = Spool::open(dir.path(), "a", one * 2).expect("open");
        spool
            .append(&[record("c", "1"), record("c", "2")])
            .expect("fits");
        let err = spool.append(&[record("c", "3")]).expect_err("full");
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(spool.len(), 2);
        spool.read_front(1).expect("read");
        spool.remove_front(1).expect("remove");
        spool.append(&[record("c", "3")]).expect("room again");
    }

    #[test]
    fn a_torn_line_is_set_aside_not_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), "a", 1 << 30).expect("open");
        spool.append(&[record("c", "1")]).expect("append");
        let mut f = OpenOptions::new()
            .append(true)
            .open(spool.path())
            .expect("open file");
        f.write_all(b"{\"id\":\"tor").expect("write");
        drop(f);
        // The next append starts on its own line, so it is not glued to the torn one.
        spool.append(&[record("c", "2")]).expect("append");
        assert_eq!(spool.len(), 2);
        let first = spool.read_front(10).expect("read");
        assert_eq!(first.len(), 1, "a batch stops before the torn line");
        spool.remove_front(1).expect("remove");
        let second = spool.read_front(10).expect("read");
        assert_eq!(
            second[0].id, "2",
            "the record after the torn line is not lost"
        );
        let aside = fs::read_to_string(dir.path().join(REJECTED)).expect("rejected file");
        assert!(aside.contains("{\"id\":\"tor"));
    }

    #[test]
    fn invalid_utf8_is_set_aside_and_does_not_stop_the_spool() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), "a", 1 << 30).expect("open");
        spool.append(&[record("c", "1")]).expect("append");
        let mut f = OpenOptions::new()
            .append(true)
            .open(spool.path())
            .expect("open file");
        f.write_all(b"{\"id\":\"\xc3").expect("write");
        drop(f);
        drop(spool);
        let spool = Spool::open(dir.path(), "a", 1 << 30).expect("reopens despite the torn line");
        assert_eq!(spool.len(), 1);
        assert_eq!(spool.read_front(10).expect("read")[0].id, "1");
    }
}
