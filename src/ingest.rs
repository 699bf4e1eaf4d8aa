//! Ingestion: find `.md`, `.txt`, `.html` and `.pdf` files, split them into token-sized chunks
//! with overlap (markdown-aware for `.md`; a PDF's chunks know their page), embed them and
//! replace each document's chunks in the index. Unchanged documents are skipped; unreadable ones
//! are reported and skipped.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};
use text_splitter::{ChunkConfig, ChunkSizer, MarkdownSplitter, TextSplitter};

mod pdf;

use crate::embed::Embedder;
use crate::retrieval::{ChunkPayload, ChunkPoint, IndexWriter, IndexedSource, chunk_id};

/// Why ingestion as a whole failed (one bad file does not fail it).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A path given on the command line does not exist.
    #[error("{0}: no such file or directory")]
    Missing(PathBuf),
    /// Chunking settings are invalid.
    #[error("chunking: {0}")]
    Chunking(String),
    /// The embedder failed.
    #[error(transparent)]
    Embed(#[from] crate::embed::EmbedError),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] crate::retrieval::IndexError),
}

/// What a run did; printed as one JSON line when not on a terminal.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Documents found.
    pub files: usize,
    /// Documents (re)indexed.
    pub indexed: usize,
    /// Documents skipped because they did not change.
    pub unchanged: usize,
    /// Chunks written.
    pub chunks: usize,
    /// Documents that could not be read, with the reason.
    pub skipped: Vec<Skipped>,
    /// Documents indexed in part: PDF pages without text (scans) or unreadable, skipped.
    pub partial: Vec<Skipped>,
    /// Documents removed because their files are gone (`--prune`).
    pub pruned: Vec<String>,
    /// Chunks in the index afterwards.
    pub index_total: usize,
    /// Wall time.
    pub elapsed_ms: u128,
}

/// A document that was not ingested.
#[derive(Debug, Serialize)]
pub struct Skipped {
    /// Its path.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// A loaded document.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Path as given (normalised to `/` separators, no leading `./`).
    pub source: String,
    /// First heading, `<title>`, or the file name.
    pub title: String,
    /// Plain text (HTML converted).
    pub text: String,
    /// Whether to split along markdown structure.
    pub markdown: bool,
    /// sha256 of the file's bytes.
    pub hash: String,
    /// For a PDF: where each page's text starts in `text` (byte offset, 1-based page), in order.
    pub pages: Vec<(usize, u32)>,
    /// What was left out of an otherwise readable document (PDF pages without text).
    pub partial: Option<String>,
}

/// A piece of a document, ready to embed.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Its text.
    pub text: String,
    /// The PDF page it starts on.
    pub page: Option<u32>,
}

const EXTENSIONS: &[&str] = &["md", "markdown", "txt", "html", "htm", "pdf"];

/// A file to ingest, and the name its chunks carry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    /// Where it is.
    pub path: PathBuf,
    /// What sources and citations call it: the path relative to its ingest root (see
    /// [`source_name`]).
    pub source: String,
}

/// Every ingestible file under `paths` (directories recursively), sorted, deduplicated.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<Found>, IngestError> {
    let mut files = Vec::new();
    for root in paths {
        if !root.exists() {
            return Err(IngestError::Missing(root.clone()));
        }
        for entry in walkdir::WalkDir::new(root).follow_links(true) {
            let Ok(entry) = entry else { continue };
            let p = entry.path();
            let ext = p
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            if entry.file_type().is_file() && ext.is_some_and(|e| EXTENSIONS.contains(&e.as_str()))
            {
                files.push(Found {
                    path: p.to_owned(),
                    source: source_name(root, p),
                });
            }
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// The name a document's chunks carry, shown to clients in sources: never a path of the server's
/// file system. A relative ingest root keeps the path as given (`docs/guide.md`, without `./`
/// or leading `../`); an absolute one becomes its last component and what lies under it
/// (`/srv/corpus/handbook` + `leave.md` → `handbook/leave.md`).
pub fn source_name(root: &Path, file: &Path) -> String {
    let named = if root.is_absolute() {
        let base = if root.is_file() {
            root.parent()
        } else {
            Some(root)
        };
        let base = base.and_then(Path::parent).unwrap_or(Path::new("/"));
        file.strip_prefix(base).unwrap_or(file).to_owned()
    } else {
        file.to_owned()
    };
    let s = named.to_string_lossy().replace('\\', "/");
    let mut s = s.as_str();
    while let Some(rest) = s.strip_prefix("./").or_else(|| s.strip_prefix("../")) {
        s = rest;
    }
    s.trim_start_matches('/').to_owned()
}

/// Reads a file into a document named `source`; `Err` says why it is skipped.
pub fn load(path: &Path, source: &str) -> Result<Document, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let hash = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let file_name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if ext == "pdf" {
        return load_pdf(&bytes, source, file_name, hash);
    }
    if bytes.contains(&0) {
        return Err("binary file (contains NUL bytes)".into());
    }
    let raw = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    let (title, text, markdown) = match ext.as_str() {
        "md" | "markdown" => {
            let title = raw
                .lines()
                .find_map(|l| l.strip_prefix("# ").map(|t| t.trim().to_owned()))
                .unwrap_or(file_name);
            (title, raw, true)
        }
        "html" | "htm" => {
            let title = html_title(&raw).unwrap_or(file_name);
            let text = html2text::from_read(raw.as_bytes(), 10_000)
                .map_err(|e| format!("unreadable HTML: {e}"))?;
            (title, text, false)
        }
        _ => (file_name, raw, false),
    };
    if text.trim().is_empty() {
        return Err("no text".into());
    }
    Ok(Document {
        source: source.to_owned(),
        title,
        text,
        markdown,
        hash,
        pages: Vec::new(),
        partial: None,
    })
}

/// A PDF as one text with its pages' offsets; pages without text are left out and reported.
fn load_pdf(
    bytes: &[u8],
    source: &str,
    file_name: String,
    hash: String,
) -> Result<Document, String> {
    let pdf = pdf::extract(bytes)?;
    let mut text = String::new();
    let mut pages = Vec::new();
    let mut empty = Vec::new();
    for (page, content) in (1u32..).zip(&pdf.pages) {
        if content.trim().is_empty() {
            if !pdf.unreadable.contains(&page) {
                empty.push(page);
            }
            continue;
        }
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        pages.push((text.len(), page));
        text.push_str(content);
    }
    let list = |pages: &[u32]| {
        pages
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if text.is_empty() {
        return Err(format!(
            "no text layer in any of its {} pages (a scan? OCR it first)",
            pdf.pages.len()
        ));
    }
    let mut notes = Vec::new();
    if !empty.is_empty() {
        notes.push(format!("no text on page {} (a scan?)", list(&empty)));
    }
    if !pdf.unreadable.is_empty() {
        notes.push(format!("unreadable page {}", list(&pdf.unreadable)));
    }
    Ok(Document {
        source: source.to_owned(),
        title: pdf.title.unwrap_or(file_name),
        text,
        markdown: false,
        hash,
        pages,
        partial: (!notes.is_empty()).then(|| format!("{}; skipped", notes.join("; "))),
    })
}

fn html_title(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let start = lower.find("<title")?;
    let open_end = start + lower[start..].find('>')? + 1;
    let close = open_end + lower[open_end..].find("</title")?;
    let title = html[open_end..close]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (!title.is_empty()).then_some(title)
}

/// Sizes chunks in the embedder's tokens when it has a tokenizer, else in estimated tokens
/// (about four characters each).
struct Sizer<'a>(Option<&'a tokenizers::Tokenizer>);

impl ChunkSizer for Sizer<'_> {
    fn size(&self, chunk: &str) -> usize {
        match self.0 {
            Some(t) => t
                .encode_fast(chunk, false)
                .map(|e| e.len())
                .unwrap_or_else(|_| chunk.len().div_ceil(4)),
            None => chunk.chars().count().div_ceil(4),
        }
    }
}

/// Splits a document into chunks of at most `tokens` tokens, overlapping by `overlap`. A PDF is
/// split page by page: each chunk lies on one page, which it names.
pub fn chunk(
    doc: &Document,
    tokens: usize,
    overlap: usize,
    tokenizer: Option<&tokenizers::Tokenizer>,
) -> Result<Vec<Chunk>, IngestError> {
    let config = || {
        ChunkConfig::new(tokens)
            .with_overlap(overlap)
            .map(|c| c.with_sizer(Sizer(tokenizer)))
    };
    config().map_err(|e| IngestError::Chunking(e.to_string()))?;
    let split = |text: &str, page: Option<u32>| -> Vec<Chunk> {
        let Ok(config) = config() else {
            return Vec::new();
        };
        let pieces: Vec<&str> = if doc.markdown {
            MarkdownSplitter::new(config).chunks(text).collect()
        } else {
            TextSplitter::new(config).chunks(text).collect()
        };
        pieces
            .into_iter()
            .filter(|c| !c.trim().is_empty())
            .map(|c| Chunk {
                text: c.to_owned(),
                page,
            })
            .collect()
    };
    if doc.pages.is_empty() {
        return Ok(split(&doc.text, None));
    }
    let ends = doc
        .pages
        .iter()
        .skip(1)
        .map(|&(start, _)| start)
        .chain([doc.text.len()]);
    Ok(doc
        .pages
        .iter()
        .zip(ends)
        .flat_map(|(&(start, page), end)| split(&doc.text[start..end], Some(page)))
        .collect())
}

/// Ingests `paths` into `index`.
pub async fn run(
    paths: &[PathBuf],
    embedder: &dyn Embedder,
    index: &dyn IndexWriter,
    chunk_tokens: usize,
    chunk_overlap: usize,
) -> Result<Summary, IngestError> {
    let started = Instant::now();
    let ingested_at = crate::store::now_rfc3339();
    let files = discover(paths)?;
    let mut summary = Summary {
        files: files.len(),
        ..Summary::default()
    };
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(files.len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} files  {msg}  [{elapsed_precise}]",
        ) {
            bar.set_style(style);
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    // Reading, converting and chunking a document is CPU work (the tokenizer sizes every chunk):
    // it runs on the blocking pool, so an ingest beside a serving process (the seed ingest) does
    // not hold up the runtime's workers.
    let counter = embedder.token_counter();
    let blocking = |e: tokio::task::JoinError| IngestError::Chunking(e.to_string());
    for Found { path, source } in files {
        bar.set_message(source.clone());
        let loaded = {
            let (path, source) = (path.clone(), source.clone());
            tokio::task::spawn_blocking(move || load(&path, &source))
                .await
                .map_err(blocking)?
        };
        let doc = match loaded {
            Ok(doc) => doc,
            Err(reason) => {
                bar.suspend(|| tracing::warn!(path = %path.display(), %reason, "skipped"));
                summary.skipped.push(Skipped {
                    path: source,
                    reason,
                });
                bar.inc(1);
                continue;
            }
        };
        if let Some(reason) = &doc.partial {
            bar.suspend(|| tracing::warn!(path = %path.display(), %reason, "indexed in part"));
            summary.partial.push(Skipped {
                path: source.clone(),
                reason: reason.clone(),
            });
        }
        if index.source_hash(&doc.source).await?.as_deref() == Some(doc.hash.as_str()) {
            summary.unchanged += 1;
            bar.inc(1);
            continue;
        }
        let (doc, texts) = {
            let counter = counter.clone();
            tokio::task::spawn_blocking(move || {
                let texts = chunk(&doc, chunk_tokens, chunk_overlap, counter.as_deref());
                (doc, texts)
            })
            .await
            .map_err(blocking)?
        };
        let chunks = texts?;
        let vectors = embedder
            .embed(chunks.iter().map(|c| c.text.clone()).collect())
            .await?;
        let points: Vec<ChunkPoint> = chunks
            .into_iter()
            .zip(vectors)
            .zip(0u32..)
            .map(|((chunk, vector), i)| ChunkPoint {
                id: chunk_id(&doc.source, i),
                vector,
                payload: ChunkPayload {
                    source: doc.source.clone(),
                    title: doc.title.clone(),
                    chunk_index: i,
                    text: chunk.text,
                    doc_hash: doc.hash.clone(),
                    page: chunk.page,
                    ingested_at: Some(ingested_at.clone()),
                },
            })
            .collect();
        summary.chunks += points.len();
        summary.indexed += 1;
        index.replace_source(&doc.source, points).await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Also when nothing changed: an earlier run may have been cut off after writing its last
    // document and before this step (nothing to do costs little).
    index.finish_ingest().await?;
    summary.index_total = index.count().await?;
    summary.elapsed_ms = started.elapsed().as_millis();
    Ok(summary)
}

/// Is `source` (a chunk's document name) under `root`, as [`source_name`] names what it finds
/// there? A root names its own files `ROOT/…` (or the file itself), `.` everything.
fn under(source: &str, root: &Path) -> bool {
    let prefix = source_name(root, root);
    prefix.is_empty()
        || prefix == "."
        || source == prefix
        || source
            .strip_prefix(prefix.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Removes from `index` the documents under `paths` that no longer exist there (deleted or
/// renamed files); documents outside those roots are left alone. Returns what it removed.
pub async fn prune(
    paths: &[PathBuf],
    index: &dyn IndexWriter,
) -> Result<Vec<IndexedSource>, IngestError> {
    let present: std::collections::HashSet<String> =
        discover(paths)?.into_iter().map(|f| f.source).collect();
    let mut removed = Vec::new();
    for doc in index.sources().await? {
        if !present.contains(&doc.source) && paths.iter().any(|root| under(&doc.source, root)) {
            index.replace_source(&doc.source, Vec::new()).await?;
            tracing::info!(source = %doc.source, chunks = doc.chunks, "pruned");
            removed.push(doc);
        }
    }
    if !removed.is_empty() {
        index.finish_ingest().await?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str, markdown: bool) -> Document {
        Document {
            source: "x".into(),
            title: "x".into(),
            text: text.into(),
            markdown,
            hash: String::new(),
            pages: Vec::new(),
            partial: None,
        }
    }

    fn texts(chunks: Vec<Chunk>) -> Vec<String> {
        chunks.into_iter().map(|c| c.text).collect()
    }

    #[test]
    fn chunks_respect_the_size_and_cover_the_text() {
        let text = (0..400)
            .map(|i| format!("Sentence number {i} is here."))
            .collect::<Vec<_>>()
            .join(" ");
        let chunks = texts(chunk(&doc(&text, false), 50, 10, None).expect("chunks"));
        assert!(chunks.len() > 5, "{}", chunks.len());
        for c in &chunks {
            assert!(
                c.chars().count().div_ceil(4) <= 50,
                "chunk too big: {}",
                c.len()
            );
        }
        assert!(
            chunks
                .first()
                .is_some_and(|c| c.starts_with("Sentence number 0 "))
        );
        assert!(
            chunks
                .last()
                .is_some_and(|c| c.ends_with("Sentence number 399 is here."))
        );
    }

    #[test]
    fn chunks_overlap() {
        let text = (0..200)
            .map(|i| format!("Word{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let chunks = texts(chunk(&doc(&text, false), 40, 15, None).expect("chunks"));
        for pair in chunks.windows(2) {
            let last_word = pair[0].split_whitespace().last().expect("words");
            assert!(pair[1].contains(last_word), "no overlap between {pair:?}");
        }
    }

    #[test]
    fn markdown_splits_on_sections() {
        let text = format!(
            "# Title\n\n## Alpha\n\n{}\n\n## Beta\n\n{}\n",
            "alpha text. ".repeat(20),
            "beta text. ".repeat(20)
        );
        let chunks = texts(chunk(&doc(&text, true), 80, 0, None).expect("chunks"));
        assert!(
            chunks.iter().any(|c| c.starts_with("## Beta")),
            "{chunks:#?}"
        );
        assert!(
            !chunks
                .iter()
                .any(|c| c.contains("alpha") && c.contains("beta"))
        );
    }

    #[test]
    fn load_reads_titles_and_rejects_binary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let md = dir.path().join("guide.md");
        std::fs::write(&md, "intro\n# The Guide\nbody").expect("write");
        assert_eq!(load(&md, "doc").expect("loads").title, "The Guide");
        let html = dir.path().join("page.html");
        std::fs::write(&html, "<html><head><TITLE> A  Page </TITLE></head><body><p>Hello <b>world</b></p></body></html>")
            .expect("write");
        let page = load(&html, "doc").expect("loads");
        assert_eq!(page.title, "A Page");
        assert!(
            page.text.contains("Hello") && !page.text.contains("<p>"),
            "{}",
            page.text
        );
        let txt = dir.path().join("notes.txt");
        std::fs::write(&txt, "plain").expect("write");
        assert_eq!(load(&txt, "doc").expect("loads").title, "notes");
        let bin = dir.path().join("blob.txt");
        std::fs::write(&bin, [0u8, 159, 146, 150]).expect("write");
        assert!(load(&bin, "doc").is_err());
        let latin1 = dir.path().join("latin1.txt");
        std::fs::write(&latin1, [b'c', b'a', b'f', 0xe9]).expect("write");
        assert!(
            load(&latin1, "doc")
                .expect_err("not utf-8")
                .contains("UTF-8")
        );
    }

    #[test]
    fn discover_filters_extensions_recursively() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        for f in [
            "a/x.md",
            "a/b/y.HTML",
            "a/z.txt",
            "a/doc.PDF",
            "a/skip.docx",
            "a/b/noext",
        ] {
            std::fs::write(dir.path().join(f), "t").expect("write");
        }
        let found = discover(&[dir.path().to_owned()]).expect("discovers");
        let names: Vec<_> = found
            .iter()
            .map(|f| {
                f.path
                    .strip_prefix(dir.path())
                    .expect("under")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names, vec!["a/b/y.HTML", "a/doc.PDF", "a/x.md", "a/z.txt"]);
        assert!(discover(&[dir.path().join("missing")]).is_err());
    }

    fn pdf_fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/pdf")
            .join(name)
    }

    #[test]
    fn a_pdf_is_read_page_by_page_and_its_chunks_know_their_page() {
        // Printed by Chromium (Skia's PDF writer) from tests/fixtures/pdf/src/handbook.html.
        let doc = load(&pdf_fixture("handbook.pdf"), "handbook.pdf").expect("loads");
        assert_eq!(
            doc.title, "Saltmere Harbour Handbook",
            "the PDF's own title"
        );
        assert_eq!(doc.pages.iter().map(|p| p.1).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(
            doc.text.contains("first lit on 3 October"),
            "ligatures folded: {}",
            doc.text
        );
        assert_eq!(doc.partial, None);
        let chunks = chunk(&doc, 40, 0, None).expect("chunks");
        let page_of = |needle: &str| {
            chunks
                .iter()
                .find(|c| c.text.contains(needle))
                .and_then(|c| c.page)
        };
        assert_eq!(page_of("harbour staff of Saltmere"), Some(1));
        assert_eq!(page_of("Ottilie Brandvold"), Some(2));
        assert_eq!(page_of("North mole"), Some(3), "{chunks:#?}");
        assert!(
            !chunks
                .iter()
                .any(|c| c.text.contains("eleven seconds") && c.text.contains("Tide")),
            "no chunk spans two pages: {chunks:#?}"
        );
    }

    #[test]
    fn two_columns_and_non_latin_text_come_out_in_reading_order() {
        let doc = load(&pdf_fixture("columns.pdf"), "columns.pdf").expect("loads");
        let text = doc.text.split_whitespace().collect::<Vec<_>>().join(" ");
        for phrase in [
            "Kronen Aufpreis",
            "visiteurs le dimanche",
            "Η βιβλιοθήκη του λιμανιού",
            "official flower of the island",
        ] {
            assert!(text.contains(phrase), "{phrase:?} in {text}");
        }
        let (left, right) = (text.find("Aufpreis"), text.find("dimanche"));
        assert!(left < right, "the left column before the right one");
        for word in ["Fähre nach Østervåg", "7:15 Uhr", "Gepäckstücke"] {
            assert!(
                text.contains(word),
                "no space inside words: {word:?} in {text}"
            );
        }
    }

    #[test]
    fn a_scanned_pdf_is_skipped_with_a_reason_and_a_bad_one_does_not_panic() {
        let err = load(&pdf_fixture("scanned.pdf"), "scanned.pdf").expect_err("no text");
        assert!(err.contains("no text layer"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("bad.pdf");
        std::fs::write(&bad, b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ntrailer").expect("write");
        assert!(load(&bad, "bad.pdf").is_err());
    }

    #[test]
    fn pruning_only_touches_documents_under_the_given_roots() {
        assert!(under("docs/guide.md", Path::new("docs")));
        assert!(under("docs/sub/a.md", Path::new("./docs")));
        assert!(!under("docsy/a.md", Path::new("docs")));
        assert!(!under("README.md", Path::new("docs")));
        assert!(under("README.md", Path::new(".")));
        assert!(under(
            "handbook/leave.md",
            Path::new("/srv/corpus/handbook")
        ));
        assert!(!under(
            "policies/leave.md",
            Path::new("/srv/corpus/handbook")
        ));
        assert!(under("docs/guide.md", Path::new("docs/guide.md")));
        assert!(!under("docs/other.md", Path::new("docs/guide.md")));
    }

    #[test]
    fn sources_never_name_the_servers_file_system() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("handbook");
        std::fs::create_dir_all(root.join("hr")).expect("mkdir");
        std::fs::write(root.join("hr/leave.md"), "t").expect("write");
        let found = discover(std::slice::from_ref(&root)).expect("discovers");
        assert_eq!(found[0].source, "handbook/hr/leave.md");
        let file = discover(&[root.join("hr/leave.md")]).expect("discovers");
        assert_eq!(
            file[0].source, "hr/leave.md",
            "a file root keeps its directory's name"
        );
        let relative = Path::new("docs/guide.md");
        assert_eq!(source_name(Path::new("docs"), relative), "docs/guide.md");
        assert_eq!(
            source_name(Path::new("./docs"), Path::new("./docs/a.md")),
            "docs/a.md"
        );
        assert_eq!(
            source_name(Path::new("../x"), Path::new("../x/a.md")),
            "x/a.md"
        );
    }
}
