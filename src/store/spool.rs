//! The local spool: turn records the store could not take yet, as JSON lines on disk, fsynced,
//! replayed in order once the store answers again (and at start-up).
//!
//! Each process owns one file, `records-<instance>.jsonl`, guarded by an exclusive lock on
//! `records-<instance>.lock` for as long as it runs. At start a process adopts every spool file
//! whose lock is free (a replica that crashed or was replaced on shared storage), so no record
//! is stranded. Removing replayed records rewrites the file to a temporary one and renames it:
//! a crash at any point leaves either the old or the new file, never a torn one, and replaying a
//! record twice is harmless because stores upsert by id.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::TurnRecord;

/// Records that could not be written to the store yet.
pub struct Spool {
    dir: PathBuf,
    path: PathBuf,
    /// Held for the life of the process; the OS drops the lock if the process dies.
    _lock: File,
    /// Serialises appends and rewrites.
    write: Mutex<()>,
    len: AtomicU64,
}

/// A spooled record that could not be parsed (a torn last line after a power cut, or a file
/// edited by hand); kept aside in `rejected.jsonl`, never dropped silently.
const REJECTED: &str = "rejected.jsonl";

impl Spool {
    /// Opens this process's spool under `dir`, adopting the files of processes that are gone.
    pub fn open(dir: &Path, instance: &str) -> io::Result<Self> {
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
        let spool = Self {
            dir: dir.to_owned(),
            path,
            _lock: lock,
            write: Mutex::new(()),
            len: AtomicU64::new(0),
        };
        spool.adopt_orphans()?;
        let len = spool.read_front(usize::MAX)?.len() as u64;
        spool.len.store(len, Ordering::Relaxed);
        Ok(spool)
    }

    /// The spool file of this process.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records waiting.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends records and fsyncs before returning: once this returns, they survive a crash.
    pub fn append(&self, records: &[TurnRecord]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(records.len() * 1024);
        for record in records {
            serde_json::to_writer(&mut buf, record)?;
            buf.push(b'\n');
        }
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
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
        Ok(())
    }

    /// Up to `n` records from the front, oldest first. Unparsable lines (a torn write, invalid
    /// UTF-8, a hand edit) are moved aside.
    pub fn read_front(&self, n: usize) -> io::Result<Vec<TurnRecord>> {
        let lines = {
            // Under the write lock: never read a line while it is being appended.
            let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
            read_lines(&self.path)?
        };
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for line in lines {
            match serde_json::from_slice::<TurnRecord>(&line) {
                Ok(record) if out.len() < n => out.push(record),
                Ok(_) => {}
                Err(_) => bad.push(String::from_utf8_lossy(&line).into_owned()),
            }
        }
        if !bad.is_empty() {
            tracing::error!(lines = bad.len(), file = %self.dir.join(REJECTED).display(),
                "unparsable spool lines moved aside");
            self.set_aside(&bad)?;
            self.rewrite(|line| serde_json::from_slice::<TurnRecord>(line).is_ok())?;
        }
        Ok(out)
    }

    /// Removes the first `n` records (those `read_front` returned and the store now holds).
    pub fn remove_front(&self, n: usize) -> io::Result<()> {
        let mut seen = 0;
        self.rewrite(|_| {
            seen += 1;
            seen > n
        })
    }

    /// Keeps a record the store refused for good in `rejected.jsonl`, for a human to look at.
    pub fn set_aside_record(&self, record: &TurnRecord) -> io::Result<()> {
        self.set_aside(&[serde_json::to_string(record)?])
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

    /// Rewrites the spool keeping the non-empty lines for which `keep` is true, atomically.
    fn rewrite(&self, mut keep: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let kept: Vec<Vec<u8>> = read_lines(&self.path)?
            .into_iter()
            .filter(|l| keep(l))
            .collect();
        let tmp = self.path.with_extension("jsonl.tmp");
        {
            let mut file = File::create(&tmp)?;
            for line in &kept {
                file.write_all(line)?;
                file.write_all(b"\n")?;
            }
            file.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        File::open(&self.dir)?.sync_all()?;
        self.len.store(kept.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Moves the records of spool files whose owner is gone into ours, then deletes them.
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
            let data = fs::read(&path)?;
            if !data.is_empty() {
                let mut file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                file.write_all(&data)?;
                if !data.ends_with(b"\n") {
                    file.write_all(b"\n")?;
                }
                file.sync_data()?;
                tracing::warn!(from = %path.display(), "adopted the spool of a stopped process");
            }
            // The lock file stays: unlinking it would let two processes lock different files
            // of the same name.
            fs::remove_file(&path)?;
        }
        Ok(())
    }
}

/// The non-blank lines of a file, as bytes (invalid UTF-8 is the parser's problem, not an I/O
/// error); none when it does not exist.
fn read_lines(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    match fs::read(path) {
        Ok(data) => Ok(data
            .split(|&b| b == b'\n')
            .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
            .map(<[u8]>::to_vec)
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
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
mod tests {
    use super::*;
    use crate::store::tests::record;

    #[test]
    fn append_read_remove_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), "a").expect("open");
        assert!(spool.is_empty());
        spool
            .append(&[record("c", "1"), record("c", "2")])
            .expect("append");
        spool.append(&[record("c", "3")]).expect("append");
        assert_eq!(spool.len(), 3);
        let ids = |v: Vec<TurnRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(spool.read_front(2).expect("read")), ["1", "2"]);
        spool.remove_front(2).expect("remove");
        assert_eq!(spool.len(), 1);
        assert_eq!(ids(spool.read_front(10).expect("read")), ["3"]);
    }

    #[test]
    fn a_restarted_process_finds_its_records_and_adopts_orphans() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let a = Spool::open(dir.path(), "a").expect("open a");
            a.append(&[record("c", "1")]).expect("append");
            let b = Spool::open(dir.path(), "a").expect("same name while a lives: a new slot");
            assert_ne!(a.path(), b.path());
            b.append(&[record("c", "2")]).expect("append");
        }
        // Both owners are gone: a new process with another name adopts both files.
        let c = Spool::open(dir.path(), "c").expect("open c");
        assert_eq!(c.len(), 2);
        let mut ids: Vec<String> = c
            .read_front(10)
            .expect("read")
            .into_iter()
            .map(|r| r.id)
            .collect();
        ids.sort();
        assert_eq!(ids, ["1", "2"]);
    }

    #[test]
    fn a_torn_line_is_set_aside_not_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), "a").expect("open");
        spool.append(&[record("c", "1")]).expect("append");
        let mut f = OpenOptions::new()
            .append(true)
            .open(spool.path())
            .expect("open file");
        f.write_all(b"{\"id\":\"tor").expect("write");
        drop(f);
        // The next append starts on its own line, so it is not glued to the torn one.
        spool.append(&[record("c", "2")]).expect("append");
        let records = spool.read_front(10).expect("read");
        assert_eq!(records.len(), 2);
        assert_eq!(spool.len(), 2);
        let aside = fs::read_to_string(dir.path().join(REJECTED)).expect("rejected file");
        assert!(aside.contains("{\"id\":\"tor"));
    }

    #[test]
    fn invalid_utf8_is_set_aside_and_does_not_stop_the_spool() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), "a").expect("open");
        spool.append(&[record("c", "1")]).expect("append");
        let mut f = OpenOptions::new()
            .append(true)
            .open(spool.path())
            .expect("open file");
        f.write_all(b"{\"id\":\"\xc3").expect("write");
        drop(f);
        drop(spool);
        let spool = Spool::open(dir.path(), "a").expect("reopens despite the torn line");
        assert_eq!(spool.len(), 1);
        assert_eq!(spool.read_front(10).expect("read")[0].id, "1");
    }
}
