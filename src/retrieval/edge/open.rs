//! Opening the embedded index: create it, or load it as stored; move its dense vectors to the
//! configured placement; give an index made before hybrid retrieval its BM25 vectors; size the
//! engine's search pool. Every step that rewrites data can be cut off and is finished at the next
//! open.

use std::path::Path;

use qdrant_edge::{
    Condition, CountRequestBuilder, CreateIndex, CreateVectorName, Distance, EdgeConfig,
    EdgeConfigBuilder, EdgeShard, EdgeSparseVectorParamsBuilder, EdgeVectorParams,
    EdgeVectorParamsBuilder, FieldIndexOperations, Filter, HasVectorCondition, Memory, Modifier,
    PayloadFieldSchema, PayloadSchemaType, SparseVectorConfig, UpdateOperation, VectorNameConfig,
    VectorNameOperations,
};

use super::{DENSE, engine, scroll_chunks, source_path, upsert_chunks};
use crate::config::IndexMemory;
use crate::retrieval::IndexError;
use crate::retrieval::bm25::{Bm25, SPARSE};

/// Points per batch when adding BM25 vectors to an older index.
const BACKFILL_BATCH: usize = 256;

/// Opens (or creates) the shard in `dir` for `dim`-sized vectors placed as `memory` says, with
/// the BM25 encoder its points are made with.
pub(super) fn open(
    dir: &Path,
    dim: usize,
    memory: IndexMemory,
) -> Result<(EdgeShard, Bm25), IndexError> {
    let memory = match memory {
        IndexMemory::Cold => Memory::Cold,
        IndexMemory::Cached => Memory::Cached,
    };
    let threads = search_threads(count_segments(dir));
    let shard = match EdgeConfig::load(dir) {
        Some(stored) => {
            let stored = stored.map_err(|e| open_error(dir, &e))?;
            match stored.vectors.get(DENSE) {
                Some(dense) if dense.size == dim && dense.memory_placement() != Some(memory) => {
                    move_vectors(dir, dense, memory, threads)?
                }
                _ => load(dir, threads)?,
            }
        }
        None => create(dir, dim, memory, threads)?,
    };
    check_dim(&shard, dir, dim)?;
    let bm25 = Bm25::new()?;
    if !shard.config().sparse_vectors.contains_key(SPARSE) {
        declare_bm25(&shard, dir)?;
    }
    // Also finishes an upgrade that was interrupted part-way.
    backfill_bm25(&shard, &bm25, dir)?;
    Ok((shard, bm25))
}

fn open_error(dir: &Path, e: &dyn std::fmt::Display) -> IndexError {
    IndexError::Open(format!("cannot open the index at {}: {e}", dir.display()))
}

/// A new shard: dense and BM25 vectors, and a keyword index on `source`.
fn create(dir: &Path, dim: usize, memory: Memory, threads: usize) -> Result<EdgeShard, IndexError> {
    let config = EdgeConfigBuilder::new()
        .max_search_threads(threads)
        .vector(
            DENSE,
            EdgeVectorParamsBuilder::new(dim, Distance::Cosine)
                .memory(memory)
                .build(),
        )
        .sparse_vector(
            SPARSE,
            EdgeSparseVectorParamsBuilder::new()
                .modifier(Modifier::Idf)
                .build(),
        )
        .build();
    let shard = EdgeShard::new(dir, config).map_err(|e| {
        IndexError::Open(format!("cannot create the index at {}: {e}", dir.display()))
    })?;
    shard
        .update(UpdateOperation::FieldIndexOperation(
            FieldIndexOperations::CreateIndex(CreateIndex {
                field_name: source_path()?,
                field_schema: Some(PayloadFieldSchema::FieldType(PayloadSchemaType::Keyword)),
            }),
        ))
        .map_err(engine)?;
    Ok(shard)
}

/// The shard as stored; only the search pool is set. Finishes a placement move that was cut off.
fn load(dir: &Path, threads: usize) -> Result<EdgeShard, IndexError> {
    let config = EdgeConfigBuilder::new().max_search_threads(threads).build();
    let shard = EdgeShard::load(dir, Some(config)).map_err(|e| open_error(dir, &e))?;
    if dir.join(MOVING).exists() {
        tracing::info!(index = %dir.display(),
            "finishing a move of the index's vectors that was cut off");
        finish_move(&shard, dir)?;
    }
    Ok(shard)
}

/// A shard whose dense vectors are placed otherwise (e.g. made before this setting, when
/// `cached` was the only placement): reopened with the new placement, and the engine rebuilds
/// the segments that differ. Only the dense vector is named: the stored sparse one is kept as it
/// is. The engine saves the new placement as it opens, before the rebuild: a marker file says a
/// move is under way until it is done, so a move cut off part-way is finished at the next open.
fn move_vectors(
    dir: &Path,
    dense: &EdgeVectorParams,
    memory: Memory,
    threads: usize,
) -> Result<EdgeShard, IndexError> {
    tracing::info!(index = %dir.display(), ?memory,
        "moving the index's vectors to the configured placement (once)");
    std::fs::write(dir.join(MOVING), b"").map_err(|e| open_error(dir, &e))?;
    let mut dense = dense.clone();
    dense.memory = Some(memory);
    let config = EdgeConfigBuilder::new()
        .vector(DENSE, dense)
        .max_search_threads(threads)
        .build();
    let shard = EdgeShard::load(dir, Some(config)).map_err(|e| open_error(dir, &e))?;
    finish_move(&shard, dir)?;
    Ok(shard)
}

/// Refuses a shard of another vector size, or one not made by ragchat.
fn check_dim(shard: &EdgeShard, dir: &Path, dim: usize) -> Result<(), IndexError> {
    match shard.config().vectors.get(DENSE).map(|v| v.size) {
        Some(size) if size == dim => Ok(()),
        Some(size) => Err(IndexError::Open(format!(
            "the index at {} holds {size}-dimensional vectors but the embedder makes \
             {dim}-dimensional ones; use the embedder it was built with, or point \
             RAGCHAT_DATA_DIR at an empty directory and re-ingest",
            dir.display()
        ))),
        None => Err(IndexError::Open(format!(
            "the index at {} has no {DENSE:?} vector; it was not made by ragchat",
            dir.display()
        ))),
    }
}

/// Marks an index whose vectors are being moved to another placement.
const MOVING: &str = "ragchat-moving-vectors";

/// Segments of the shard in `dir` as the engine will load them: directories with a
/// `version.info`, neither hidden nor `.deleted` leftovers (it skips or removes those). 0 for a
/// new shard.
fn count_segments(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("segments")).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| {
                let path = e.path();
                let name = e.file_name();
                let name = name.to_string_lossy();
                !name.starts_with('.')
                    && !name.ends_with(".deleted")
                    && path.join("version.info").is_file()
            })
            .count()
    })
}

/// Threads of the engine's per-segment search pool, for a shard of `segments` segments.
///
/// One while at most one segment holds data beside the appendable one (which takes new points
/// and is near empty after an optimize): that is what our ingest leaves. With one thread the
/// engine searches on the calling thread, one of our blocking threads, so questions still search
/// in parallel; its default pool (4 threads per core) made every search hop to it and wake idle
/// threads. On a one-segment index: search p50 0.50-0.55 -> 0.22-0.30 ms and 0-9 points less CPU
/// at 1,500 streams (docs/benchmarks.md). With more segments, 0: the engine's default, which
/// searches them in parallel and has threads to spare for page faults of `cold` vectors.
///
/// The engine saves the value in the shard's config and reuses it when none is given: to go back
/// to its default, pass 0, not nothing. Sized at open: a shard that gains segments while serving
/// (a seed) keeps its pool until the next start.
fn search_threads(segments: usize) -> usize {
    if segments <= 2 { 1 } else { 0 }
}

/// Rebuilds the segments whose placement differs from the shard's config, then clears the mark.
fn finish_move(shard: &EdgeShard, dir: &Path) -> Result<(), IndexError> {
    shard.optimize().map_err(engine)?;
    shard.flush().map_err(engine)?;
    std::fs::remove_file(dir.join(MOVING)).map_err(engine)
}

/// Declares the BM25 vector in an index made before hybrid retrieval.
fn declare_bm25(shard: &EdgeShard, dir: &Path) -> Result<(), IndexError> {
    tracing::info!(index = %dir.display(), "declaring BM25 vectors in an index made before hybrid retrieval");
    shard
        .update(UpdateOperation::VectorNameOperation(
            VectorNameOperations::CreateVectorName(CreateVectorName {
                vector_name: SPARSE.into(),
                config: VectorNameConfig::sparse(SparseVectorConfig {
                    modifier: Some(Modifier::Idf),
                    datatype: None,
                }),
            }),
        ))
        .map_err(engine)
}

/// Points that have no BM25 vector yet.
fn without_bm25() -> Filter {
    Filter::new_must_not(Condition::HasVector(HasVectorCondition::from(
        SPARSE.to_owned(),
    )))
}

/// Gives every point without a BM25 vector one, made from the chunk text it already stores
/// (no re-embedding). A no-op (one count) on an index that is up to date.
fn backfill_bm25(shard: &EdgeShard, bm25: &Bm25, dir: &Path) -> Result<(), IndexError> {
    let missing = shard
        .count(
            CountRequestBuilder::new()
                .filter(without_bm25())
                .exact(true)
                .build(),
        )
        .map_err(engine)?;
    if missing == 0 {
        return Ok(());
    }
    let started = std::time::Instant::now();
    tracing::info!(index = %dir.display(), chunks = missing, "adding BM25 vectors from the stored chunk text");
    let mut from = None;
    loop {
        let (points, next) = scroll_chunks(shard, Some(without_bm25()), from, BACKFILL_BATCH)?;
        upsert_chunks(shard, points, bm25)?;
        match next {
            Some(id) => from = Some(id),
            None => break,
        }
    }
    shard.optimize().map_err(engine)?;
    shard.flush().map_err(engine)?;
    tracing::info!(
        chunks = missing,
        ms = started.elapsed().as_millis() as u64,
        "BM25 vectors added"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{count_segments, search_threads};

    #[test]
    fn searches_on_the_callers_thread_unless_several_segments_hold_data() {
        assert_eq!(search_threads(0), 1, "a new index");
        assert_eq!(search_threads(1), 1, "only the appendable segment");
        assert_eq!(
            search_threads(2),
            1,
            "one optimized segment and the appendable one"
        );
        assert_eq!(search_threads(3), 0, "several: the engine's own pool");
    }

    #[test]
    fn counts_the_segments_the_engine_loads() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(count_segments(dir.path()), 0, "no segments directory yet");
        let segments = dir.path().join("segments");
        for name in [
            "0b7a4c1e-2f7d-4f3c-9a57-3e1f6f0c2d11",
            "5d1f2a9b-8c3e-4b6a-a1d2-7e9f0b3c4d55",
            ".0b7a4c1e-2f7d-4f3c-9a57-3e1f6f0c2d12",
            "0b7a4c1e-2f7d-4f3c-9a57-3e1f6f0c2d13.deleted",
        ] {
            std::fs::create_dir_all(segments.join(name)).expect("segment dir");
            std::fs::write(segments.join(name).join("version.info"), b"1").expect("version");
        }
        // Cut off while being written: no version file, removed by the engine at load.
        std::fs::create_dir_all(segments.join("7c2e")).expect("segment dir");
        std::fs::write(segments.join("manifest.json"), b"{}").expect("file");
        assert_eq!(count_segments(dir.path()), 2);
    }
}
