//! The embedded Qdrant engine (qdrant-edge), persisted in a directory. Its API is synchronous, so
//! every call runs on the blocking pool. One process per directory: a second one fails on the
//! write-ahead-log lock. Every point carries a dense vector and a BM25 sparse vector; an index
//! made before hybrid retrieval gets its BM25 vectors added when it is opened.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use qdrant_edge::{
    Condition, CountRequestBuilder, EdgeShard, FieldCondition, Filter, Fusion, Match, NamedQuery,
    PointId, PointInsertOperations, PointOperations, PointStruct, PrefetchBuilder, QueryEnum,
    QueryRequestBuilder, ScoringQuery, ScrollRequestBuilder, UpdateOperation, Vector,
    VectorInternal, VectorStructInternal, Vectors, WithPayloadInterface, WithVector,
};

use super::bm25::{Bm25, SPARSE};
use super::{
    ChunkPayload, ChunkPoint, Hit, IndexError, IndexTransfer, IndexWriter, IndexedSource, Query,
    RRF_K, VectorIndex, prefetch_limit, rank,
};
use crate::config::{IndexMemory, RetrievalMode};

mod open;

/// Name of the dense vector in every point.
pub const DENSE: &str = "dense";

/// An embedded Qdrant shard.
pub struct EdgeIndex {
    shard: Arc<EdgeShard>,
    bm25: Arc<Bm25>,
    dim: usize,
    dir: PathBuf,
}

fn engine(e: impl std::fmt::Display) -> IndexError {
    IndexError::Engine(e.to_string())
}

impl EdgeIndex {
    /// Opens the shard in `dir`, creating it for `dim`-sized vectors if it does not exist, with
    /// its dense vectors placed as `memory` says (an index placed otherwise is rebuilt once).
    /// Refuses a shard that holds vectors of another size.
    pub fn open(dir: &Path, dim: usize, memory: IndexMemory) -> Result<Self, IndexError> {
        let (shard, bm25) = open::open(dir, dim, memory)?;
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

    async fn ping(&self) -> Result<(), IndexError> {
        self.blocking(|shard| shard.info().map(drop).map_err(engine))
            .await
    }
}

#[async_trait]
impl IndexWriter for EdgeIndex {
    async fn count(&self) -> Result<usize, IndexError> {
        self.blocking(|shard| {
            shard
                .count(CountRequestBuilder::new().exact(true).build())
                .map_err(engine)
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

    async fn sources(&self) -> Result<Vec<IndexedSource>, IndexError> {
        self.blocking(|shard| {
            let mut docs = std::collections::BTreeMap::new();
            let mut from = None;
            loop {
                let mut request = ScrollRequestBuilder::new()
                    .limit(1024)
                    .with_payload(WithPayloadInterface::Bool(true))
                    .with_vector(WithVector::Bool(false));
                if let Some(id) = from.take() {
                    request = request.offset(id);
                }
                let (records, next) = shard.scroll(request.build()).map_err(engine)?;
                for record in records {
                    let map = record.payload.map(|p| p.0).unwrap_or_default();
                    super::tally(
                        &mut docs,
                        serde_json::Value::Object(map.into_iter().collect()),
                    )?;
                }
                match next {
                    Some(id) => from = Some(id),
                    None => return Ok(docs.into_values().collect()),
                }
            }
        })
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
}

#[async_trait]
impl IndexTransfer for EdgeIndex {
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
}
