//! The embedded Qdrant engine (qdrant-edge), persisted in a directory. Its API is synchronous, so
//! every call runs on the blocking pool. One process per directory: a second one fails on the
//! write-ahead-log lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use qdrant_edge::{
    Condition, CountRequestBuilder, CreateIndex, Distance, EdgeConfigBuilder, EdgeShard,
    EdgeVectorParamsBuilder, FieldCondition, FieldIndexOperations, Filter, Match, NamedQuery,
    PayloadFieldSchema, PayloadSchemaType, PointId, PointInsertOperations, PointOperations,
    PointStruct, QueryEnum, QueryRequestBuilder, ScoringQuery, ScrollRequestBuilder,
    UpdateOperation, Vectors, WithPayloadInterface,
};

use super::{ChunkPayload, ChunkPoint, Hit, IndexError, VectorIndex};

/// Name of the dense vector in every point.
pub const DENSE: &str = "dense";

/// An embedded Qdrant shard.
pub struct EdgeIndex {
    shard: Arc<EdgeShard>,
    dim: usize,
    dir: PathBuf,
}

fn engine(e: impl std::fmt::Display) -> IndexError {
    IndexError::Engine(e.to_string())
}

impl EdgeIndex {
    /// Opens the shard in `dir`, creating it for `dim`-sized vectors if it does not exist.
    /// Refuses a shard that holds vectors of another size.
    pub fn open(dir: &Path, dim: usize) -> Result<Self, IndexError> {
        let existing = dir.join("edge_config.json").is_file();
        let shard = if existing {
            EdgeShard::load(dir, None).map_err(|e| {
                IndexError::Open(format!("cannot open the index at {}: {e}", dir.display()))
            })?
        } else {
            let config = EdgeConfigBuilder::new()
                .vector(
                    DENSE,
                    EdgeVectorParamsBuilder::new(dim, Distance::Cosine).build(),
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
        Ok(Self {
            shard: Arc::new(shard),
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

    async fn search(&self, vector: Vec<f32>, k: usize) -> Result<Vec<Hit>, IndexError> {
        self.blocking(move |shard| {
            let request = QueryRequestBuilder::new(k)
                .query(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
                    query: vector.into(),
                    using: Some(DENSE.into()),
                })))
                .with_payload(WithPayloadInterface::Bool(true))
                .build();
            shard
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
                .collect()
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
        self.blocking(move |shard| {
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::DeletePointsByFilter(filter),
                ))
                .map_err(engine)?;
            if points.is_empty() {
                return Ok(());
            }
            let points = points
                .into_iter()
                .map(|p| {
                    let payload = serde_json::to_value(&p.payload).map_err(engine)?;
                    Ok(PointStruct::new(
                        PointId::Uuid(p.id),
                        Vectors::new_named([(DENSE, p.vector)]),
                        payload,
                    )
                    .into())
                })
                .collect::<Result<Vec<_>, IndexError>>()?;
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
                ))
                .map_err(engine)
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
