//! The embedded Qdrant engine (qdrant-edge), persisted in a directory. Its API is synchronous, so
//! every call runs on the blocking pool. One process per directory: a second one fails on the
//! write-ahead-log lock. Every point carries a dense vector and a BM25 sparse vector; an index
//! made before hybrid retrieval gets its BM25 vectors added when it is opened.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use qdrant_edge::{
    Condition, CountRequestBuilder, CreateIndex, CreateVectorName, Distance, EdgeConfig,
    EdgeConfigBuilder, EdgeShard, EdgeSparseVectorParamsBuilder, EdgeVectorParamsBuilder,
    FieldCondition, FieldIndexOperations, Filter, Fusion, HasVectorCondition, Match, Memory,
    Modifier, NamedQuery, PayloadFieldSchema, PayloadSchemaType, PointId, PointInsertOperations,
    PointOperations, PointStruct, PrefetchBuilder, QueryEnum, QueryRequestBuilder, ScoringQuery,
    ScrollRequestBuilder, SparseVectorConfig, UpdateOperation, Vector, VectorInternal,
    VectorNameConfig, VectorNameOperations, VectorStructInternal, Vectors, WithPayloadInterface,
    WithVector,
};

use super::bm25::{Bm25, SPARSE};
use super::{
    ChunkPayload, ChunkPoint, Hit, IndexError, Query, RRF_K, VectorIndex, prefetch_limit, rank,
};
use crate::config::{IndexMemory, RetrievalMode};

/// Name of the dense vector in every point.
pub const DENSE: &str = "dense";

/// An embedded Qdrant shard.
pub struct EdgeIndex {
    shard: Arc<EdgeShard>,
    bm25: Arc<Bm25>,
    dim: usize,
    dir: PathBuf,
}

/// Points per batch when adding BM25 vectors to an older index.
const BACKFILL_BATCH: usize = 256;

fn engine(e: impl std::fmt::Display) -> IndexError {
    IndexError::Engine(e.to_string())
}

impl EdgeIndex {
    /// Opens the shard in `dir`, creating it for `dim`-sized vectors if it does not exist, with
    /// its dense vectors placed as `memory` says (an index placed otherwise is rebuilt once).
    /// Refuses a shard that holds vectors of another size.
    pub fn open(dir: &Path, dim: usize, memory: IndexMemory) -> Result<Self, IndexError> {
        let memory = match memory {
            IndexMemory::Cold => Memory::Cold,
            IndexMemory::Cached => Memory::Cached,
        };
        let open_err = |e: &dyn std::fmt::Display| {
            IndexError::Open(format!("cannot open the index at {}: {e}", dir.display()))
        };
        let threads = search_threads(count_segments(dir));
        let shard = if let Some(stored) = EdgeConfig::load(dir) {
            let stored = stored.map_err(|e| open_err(&e))?;
            match stored.vectors.get(DENSE) {
                // Placed otherwise (e.g. made before this setting, when `cached` was the only
                // placement): reopen with the new placement and let the engine rebuild the
                // segments that differ. Only the dense vector is named: the stored sparse one is
                // kept as it is.
                // The engine saves the new placement as it opens, before the rebuild: a marker
                // file says a move is under way until it is done, so a move cut off part-way is
                // finished at the next open.
                Some(dense) if dense.size == dim && dense.memory_placement() != Some(memory) => {
                    tracing::info!(index = %dir.display(), ?memory,
                        "moving the index's vectors to the configured placement (once)");
                    std::fs::write(dir.join(MOVING), b"").map_err(|e| open_err(&e))?;
                    let mut dense = dense.clone();
                    dense.memory = Some(memory);
                    let config = EdgeConfigBuilder::new()
                        .vector(DENSE, dense)
                        .max_search_threads(threads)
                        .build();
                    let shard = EdgeShard::load(dir, Some(config)).map_err(|e| open_err(&e))?;
                    finish_move(&shard, dir)?;
                    shard
                }
                _ => {
                    // Only the search pool is set: everything else as stored.
                    let config = EdgeConfigBuilder::new().max_search_threads(threads).build();
                    let shard = EdgeShard::load(dir, Some(config)).map_err(|e| open_err(&e))?;
                    if dir.join(MOVING).exists() {
                        tracing::info!(index = %dir.display(),
                            "finishing a move of the index's vectors that was cut off");
                        finish_move(&shard, dir)?;
                    }
                    shard
                }
            }
        } else {
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
                        field_schema: Some(PayloadFieldSchema::FieldType(
                            PayloadSchemaType::Keyword,
                        )),
                    }),
                ))
                .map_err(engine)?;
            shard
        };
        let stored = shard.config().vectors.get(DENSE).map(|v| v.size);
        match stored {
            Some(size) if size == dim => {}
            Some(size) => {
                return Err(IndexError::Open(format!(
                    "the index at {} holds {size}-dimensional vectors but the embedder makes \
                     {dim}-dimensional ones; use the embedder it was built with, or point \
                     RAGCHAT_DATA_DIR at an empty directory and re-ingest",
                    dir.display()
                )));
            }
            None => {
                return Err(IndexError::Open(format!(
                    "the index at {} has no {DENSE:?} vector; it was not made by ragchat",
                    dir.display()
                )));
            }
        }
        let bm25 = Bm25::new()?;
        if !shard.config().sparse_vectors.contains_key(SPARSE) {
            declare_bm25(&shard, dir)?;
        }
        // Also finishes an upgrade that was interrupted part-way.
        backfill_bm25(&shard, &bm25, dir)?;
        Ok(Self {
            shard: Arc::new(shard),
            bm25: Arc::new(bm25),
            dim,
            dir: dir.to_owned(),
        })
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, IndexError>
    where
        T: Send + 'static,
        F: FnOnce(&EdgeShard) -> Result<T, IndexError> + Send + 'static,
    {
        let shard = Arc::clone(&self.shard);
        tokio::task::spawn_blocking(move || f(&shard))
            .await
            .map_err(engine)?
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

/// Up to `limit` chunks (with their dense vectors) matching `filter`, from `from` on in id
/// order, and where the next page starts.
fn scroll_chunks(
    shard: &EdgeShard,
    filter: Option<Filter>,
    from: Option<uuid::Uuid>,
    limit: usize,
) -> Result<(Vec<ChunkPoint>, Option<uuid::Uuid>), IndexError> {
    let mut request = ScrollRequestBuilder::new()
        .limit(limit)
        .with_payload(WithPayloadInterface::Bool(true))
        .with_vector(WithVector::Bool(true));
    if let Some(filter) = filter {
        request = request.filter(filter);
    }
    if let Some(id) = from {
        request = request.offset(PointId::Uuid(id));
    }
    let (records, next) = shard.scroll(request.build()).map_err(engine)?;
    let points = records
        .into_iter()
        .map(|record| {
            let id = uuid_of(record.id)?;
            let (vector, payload) = dense_and_payload(record)?;
            Ok(ChunkPoint {
                id,
                vector,
                payload,
            })
        })
        .collect::<Result<Vec<_>, IndexError>>()?;
    Ok((points, next.map(uuid_of).transpose()?))
}

/// Inserts or replaces `points` by id, each with its BM25 vector made from its text.
fn upsert_chunks(
    shard: &EdgeShard,
    points: Vec<ChunkPoint>,
    bm25: &Bm25,
) -> Result<(), IndexError> {
    if points.is_empty() {
        return Ok(());
    }
    let points = points
        .into_iter()
        .map(|p| point(PointId::Uuid(p.id), p.vector, &p.payload, bm25))
        .collect::<Result<Vec<_>, IndexError>>()?;
    shard
        .update(UpdateOperation::PointOperation(
            PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
        ))
        .map_err(engine)
}

/// The dense vector and the payload of a scrolled record.
fn dense_and_payload(record: qdrant_edge::Record) -> Result<(Vec<f32>, ChunkPayload), IndexError> {
    let dense = match record.vector {
        Some(VectorStructInternal::Named(mut named)) => named.remove(DENSE),
        _ => None,
    };
    let Some(VectorInternal::Dense(dense)) = dense else {
        return Err(IndexError::Engine(format!(
            "point {} has no {DENSE:?} vector",
            record.id
        )));
    };
    Ok((dense, payload_of(record.payload)?))
}

fn uuid_of(id: PointId) -> Result<uuid::Uuid, IndexError> {
    match id {
        PointId::Uuid(u) => Ok(u),
        other => Err(IndexError::Engine(format!(
            "point id {other} is not a UUID; the index was not made by ragchat"
        ))),
    }
}

/// A point with both vectors and the chunk payload.
fn point(
    id: PointId,
    dense: Vec<f32>,
    payload: &ChunkPayload,
    bm25: &Bm25,
) -> Result<qdrant_edge::PointStructPersisted, IndexError> {
    let sparse = bm25.document(&payload.text);
    let json = serde_json::to_value(payload).map_err(engine)?;
    let vectors = Vectors::new_named([
        (DENSE, Vector::new_dense(dense)),
        (SPARSE, Vector::from(sparse)),
    ]);
    Ok(PointStruct::new(id, vectors, json).into())
}

fn nearest(query: VectorInternal, using: &str) -> ScoringQuery {
    ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
        query,
        using: Some(using.into()),
    }))
}

fn source_path() -> Result<qdrant_edge::JsonPath, IndexError> {
    "source"
        .try_into()
        .map_err(|()| IndexError::Engine("invalid payload path".into()))
}

fn source_filter(source: &str) -> Result<Filter, IndexError> {
    Ok(Filter::new_must(Condition::Field(
        FieldCondition::new_match(source_path()?, Match::from(source.to_owned())),
    )))
}

fn payload_of(payload: Option<qdrant_edge::Payload>) -> Result<ChunkPayload, IndexError> {
    let map = payload.map(|p| p.0).unwrap_or_default();
    serde_json::from_value(serde_json::Value::Object(map.into_iter().collect()))
        .map_err(|e| IndexError::Engine(format!("unexpected payload: {e}")))
}

#[async_trait]
impl VectorIndex for EdgeIndex {
    fn dim(&self) -> usize {
        self.dim
    }

    fn describe(&self) -> String {
        format!("edge:{}", self.dir.display())
    }

    async fn search(&self, query: Query, k: usize) -> Result<Vec<Hit>, IndexError> {
        let bm25 = Arc::clone(&self.bm25);
        self.blocking(move |shard| {
            let dense = nearest(VectorInternal::Dense(query.vector), DENSE);
            let request = match query.mode {
                RetrievalMode::Dense => QueryRequestBuilder::new(k).query(dense),
                RetrievalMode::Hybrid => {
                    let sparse = VectorInternal::Sparse(bm25.query(&query.text));
                    let limit = prefetch_limit(k);
                    QueryRequestBuilder::new(k)
                        .add_prefetch(PrefetchBuilder::new(limit).query(dense).build())
                        .add_prefetch(
                            PrefetchBuilder::new(limit)
                                .query(nearest(sparse, SPARSE))
                                .build(),
                        )
                        .query(ScoringQuery::Fusion(Fusion::Rrf {
                            k: RRF_K,
                            weights: None,
                        }))
                }
            };
            let request = request
                .with_payload(WithPayloadInterface::Bool(true))
                .build();
            let mut hits = shard
                .query(request)
                .map_err(engine)?
                .into_iter()
                .map(|p| {
                    Ok(Hit {
                        id: p.id.to_string(),
                        score: p.score,
                        payload: payload_of(p.payload)?,
                    })
                })
                .collect::<Result<Vec<_>, IndexError>>()?;
            rank(&mut hits);
            Ok(hits)
        })
        .await
    }

    async fn source_hash(&self, source: &str) -> Result<Option<String>, IndexError> {
        let filter = source_filter(source)?;
        self.blocking(move |shard| {
            let (records, _) = shard
                .scroll(
                    ScrollRequestBuilder::new()
                        .filter(filter)
                        .limit(1)
                        .with_payload(WithPayloadInterface::Bool(true))
                        .build(),
                )
                .map_err(engine)?;
            match records.into_iter().next() {
                Some(r) => Ok(Some(payload_of(r.payload)?.doc_hash)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn replace_source(
        &self,
        source: &str,
        points: Vec<ChunkPoint>,
    ) -> Result<(), IndexError> {
        let filter = source_filter(source)?;
        let bm25 = Arc::clone(&self.bm25);
        self.blocking(move |shard| {
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::DeletePointsByFilter(filter),
                ))
                .map_err(engine)?;
            upsert_chunks(shard, points, &bm25)
        })
        .await
    }

    async fn count(&self) -> Result<usize, IndexError> {
        self.blocking(|shard| {
            shard
                .count(CountRequestBuilder::new().exact(true).build())
                .map_err(engine)
        })
        .await
    }

    async fn scroll(
        &self,
        from: Option<uuid::Uuid>,
        limit: usize,
    ) -> Result<(Vec<ChunkPoint>, Option<uuid::Uuid>), IndexError> {
        self.blocking(move |shard| scroll_chunks(shard, None, from, limit))
            .await
    }

    async fn upsert(&self, points: Vec<ChunkPoint>) -> Result<(), IndexError> {
        let bm25 = Arc::clone(&self.bm25);
        self.blocking(move |shard| upsert_chunks(shard, points, &bm25))
            .await
    }

    async fn finish_ingest(&self) -> Result<(), IndexError> {
        // The engine never builds its HNSW graph by itself; until then search is brute force.
        self.blocking(|shard| {
            shard.optimize().map_err(engine)?;
            shard.flush().map_err(engine)
        })
        .await
    }

    async fn ping(&self) -> Result<(), IndexError> {
        self.blocking(|shard| shard.info().map(drop).map_err(engine))
            .await
    }
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
