//! Moving an index between backends (`ragchat index export` / `import`): JSON lines, a header
//! line then one chunk per line with its id, dense vector and payload. BM25 vectors are not
//! exported; the importing index makes them from the chunk text. Ids are kept, so documents
//! imported this way are recognised as unchanged by a later `ragchat ingest`.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ChunkPayload, ChunkPoint, IndexError, IndexTransfer};

/// Chunks per page read from, or written to, an index.
const BATCH: usize = 256;

/// The export format's name and version, in the header line.
const FORMAT: &str = "ragchat-index";
const VERSION: u32 = 1;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Reading or writing the file failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A line of the file is not what an export holds.
    #[error("line {line}: {message}")]
    Format {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    version: u32,
    dim: usize,
    chunks: usize,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    id: Uuid,
    vector: Vec<f32>,
    payload: ChunkPayload,
}

/// Writes every chunk of `index` to `out`; returns how many.
pub async fn export(
    index: &dyn IndexTransfer,
    mut out: impl Write,
) -> Result<usize, TransferError> {
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        dim: index.dim(),
        chunks: index.count().await?,
    };
    writeln!(out, "{}", json(&header)?)?;
    let mut written = 0;
    let mut from = None;
    loop {
        let (points, next) = index.scroll(from, BATCH).await?;
        for p in points {
            let line = Line {
                id: p.id,
                vector: p.vector,
                payload: p.payload,
            };
            writeln!(out, "{}", json(&line)?)?;
            written += 1;
        }
        match next {
            Some(id) => from = Some(id),
            None => break,
        }
    }
    out.flush()?;
    Ok(written)
}

fn json(value: &impl Serialize) -> Result<String, TransferError> {
    serde_json::to_string(value).map_err(|e| TransferError::Io(e.into()))
}

/// Upserts every chunk of an export read from `input` into `index`, which must be empty, then
/// builds its search structures; returns how many. The header and the index are checked before
/// anything is written; a bad line further on stops the import there, and a file shorter than
/// its header says is an error after the import (already written chunks stay: writes are
/// upserts by id).
pub async fn import(
    input: impl BufRead,
    index: &dyn IndexTransfer,
) -> Result<usize, TransferError> {
    let mut lines = input.lines().enumerate();
    let bad = |line: usize, message: String| TransferError::Format {
        line: line + 1,
        message,
    };
    let (n, first) = lines
        .next()
        .ok_or_else(|| bad(0, "empty file; expected an export header".into()))?;
    let header: Header = serde_json::from_str(&first?)
        .map_err(|e| bad(n, format!("not a ragchat index export header ({e})")))?;
    if header.format != FORMAT || header.version != VERSION {
        return Err(bad(
            n,
            format!(
                "format {} version {} is not {FORMAT} version {VERSION}",
                header.format, header.version
            ),
        ));
    }
    if header.dim != index.dim() {
        return Err(bad(
            n,
            format!(
                "the export holds {}-dimensional vectors but this index (and its embedder) uses \
                 {}; import into an index made with the same embedder",
                header.dim,
                index.dim()
            ),
        ));
    }
    // Importing merges by id: chunks the export does not have would stay behind and could later
    // pass for current documents. Only an empty index takes an import.
    let present = index.count().await?;
    if present > 0 {
        return Err(bad(
            n,
            format!(
                "{} already holds {present} chunks; import into an empty index (a new data \
                 directory or Qdrant collection)",
                index.describe()
            ),
        ));
    }
    let mut imported = 0;
    let mut batch = Vec::with_capacity(BATCH);
    for (n, line) in lines {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let Line {
            id,
            vector,
            payload,
        } = serde_json::from_str(&line).map_err(|e| bad(n, e.to_string()))?;
        if vector.len() != header.dim {
            return Err(bad(
                n,
                format!("vector of size {}, expected {}", vector.len(), header.dim),
            ));
        }
        batch.push(ChunkPoint {
            id,
            vector,
            payload,
        });
        if batch.len() == BATCH {
            imported += batch.len();
            index.upsert(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        imported += batch.len();
        index.upsert(batch).await?;
    }
    index.finish_ingest().await?;
    if imported != header.chunks {
        return Err(bad(
            n,
            format!(
                "the header announces {} chunks but the file holds {imported}: the export is \
                 incomplete (the {imported} read were imported)",
                header.chunks
            ),
        ));
    }
    Ok(imported)
}
