//! A Qdrant server or cluster over gRPC (`qdrant-client`): the index every replica shares. The
//! same point ids, payload, named vectors (`dense`, cosine; `bm25`, sparse with IDF) and filters
//! as the embedded engine, so ingest and turns behave the same on both and `ragchat index
//! export/import` moves data between them.
//!
//! The collection is checked (and created when missing) on first contact, not at construction:
//! a replica that starts while the server is unreachable serves `retrieval_unavailable` and
//! reports unready until it answers, instead of crash-looping. Every call is bounded by the
//! configured timeout; transient failures are retried twice with back-off.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::vector_output::Vector as VectorOut;
use qdrant_client::qdrant::vectors_config::Config as VectorsConfigKind;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    CreateVectorNameRequestBuilder, DeletePointsBuilder, Distance, FieldType, Filter, Modifier,
    NamedVectors, PointId, PointStruct, PointVectors, PrefetchQueryBuilder, Query as QdrantQuery,
    QueryPointsBuilder, Rrf, ScrollPointsBuilder, SparseVectorCreationConfigBuilder,
    SparseVectorParamsBuilder, SparseVectorsConfigBuilder, UpdatePointVectorsBuilder,
    UpsertPointsBuilder, Vector, VectorInput, VectorParamsBuilder, VectorsConfigBuilder,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::bm25::{Bm25, SPARSE};
use super::edge::DENSE;
use super::{
    ChunkPayload, ChunkPoint, Hit, IndexError, Query, RRF_K, VectorIndex, prefetch_limit, rank,
};
use crate::config::RetrievalMode;

/// Attempts per call for transient failures (unavailable, deadline exceeded, throttled).
const ATTEMPTS: u32 = 3;

/// Points per page when giving an older collection its BM25 vectors.
const BACKFILL_BATCH: usize = 256;

/// How to reach the collection.
#[derive(Debug, Clone)]
pub struct QdrantSettings {
    /// gRPC URL.
    pub url: String,
    /// API key, if the server wants one.
    pub api_key: Option<SecretString>,
    /// Collection name.
    pub collection: String,
    /// Bound on each call.
    pub timeout: Duration,
}

/// A collection on a Qdrant server.
pub struct QdrantIndex {
    client: Qdrant,
    collection: String,
    /// `scheme://host:port` only: never a path, query or credential.
    endpoint: String,
    dim: usize,
    bm25: Arc<Bm25>,
    checked: OnceCell<()>,
    /// Bound on one call with its retries: twice the configured timeout.
    deadline: Duration,
}

fn transient(e: &QdrantError) -> bool {
    use tonic::Code;
    match e {
        QdrantError::ResourceExhaustedError { .. } => true,
        QdrantError::ResponseError { status } => match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::ResourceExhausted => true,
            // qdrant-client reports a refused or broken connection as Internal.
            Code::Internal => {
                let m = status.message();
                m.contains("Failed to connect") || m.contains("transport error")
            }
            _ => false,
        },
        QdrantError::Io(_) => true,
        _ => false,
    }
}

fn failed(e: QdrantError) -> IndexError {
    IndexError::Engine(format!("qdrant: {e}"))
}

/// Runs `call` up to [`ATTEMPTS`] times while it fails transiently (100 ms, then 400 ms apart;
/// or what the server asks for when it throttles, up to 2 s), all within `deadline`: the client
/// itself retries a timed-out call once on a fresh connection, so one attempt alone is not
/// bounded by the configured timeout.
async fn retry<T, F, Fut>(deadline: Duration, mut call: F) -> Result<T, IndexError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, QdrantError>>,
{
    let attempts = async {
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < ATTEMPTS && transient(&e) => {
                    let wait = match &e {
                        QdrantError::ResourceExhaustedError {
                            retry_after_seconds,
                            ..
                        } => Duration::from_secs((*retry_after_seconds).min(2)),
                        _ => Duration::from_millis(100 * 4u64.pow(attempt - 1)),
                    };
                    tracing::debug!(error = %e, attempt, "qdrant call failed; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(failed(e)),
            }
        }
    };
    tokio::time::timeout(deadline, attempts)
        .await
        .unwrap_or_else(|_| {
            Err(IndexError::Engine(format!(
                "qdrant: no answer within {} ms",
                deadline.as_millis()
            )))
        })
}

fn endpoint_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "<invalid url>".into(),
    }
}

fn point_id_string(id: Option<PointId>) -> Result<String, IndexError> {
    match id.and_then(|id| id.point_id_options) {
        Some(PointIdOptions::Uuid(u)) => Ok(u),
        Some(PointIdOptions::Num(n)) => Err(IndexError::Engine(format!(
            "point id {n} is not a UUID; the collection was not made by ragchat"
        ))),
        None => Err(IndexError::Engine("a point without an id".into())),
    }
}

fn payload_of(
    map: std::collections::HashMap<String, qdrant_client::qdrant::Value>,
) -> Result<ChunkPayload, IndexError> {
    let json = serde_json::Value::from(Payload::from(map));
    serde_json::from_value(json).map_err(|e| IndexError::Engine(format!("unexpected payload: {e}")))
}

fn source_filter(source: &str) -> Filter {
    Filter::must([Condition::matches("source", source.to_owned())])
}

impl QdrantIndex {
    /// A client for `settings`; no network call yet.
    pub fn new(settings: &QdrantSettings, dim: usize) -> Result<Self, IndexError> {
        let mut builder = Qdrant::from_url(&settings.url)
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            // The version probe blocks and prints to stdout; readiness checks the server instead.
            .skip_compatibility_check();
        if let Some(key) = &settings.api_key {
            builder = builder.api_key(key.expose_secret().to_owned());
        }
        let client = builder
            .build()
            .map_err(|e| IndexError::Open(format!("RAGCHAT_QDRANT_URL: {e}")))?;
        Ok(Self {
            client,
            collection: settings.collection.clone(),
            endpoint: endpoint_of(&settings.url),
            dim,
            bm25: Arc::new(Bm25::new()?),
            checked: OnceCell::new(),
            deadline: settings.timeout * 2,
        })
    }

    /// Makes sure the collection exists with our vectors (creating it, or adding BM25 vectors to
    /// an older one); once per process. `IndexError::Open` when it exists but cannot be ours.
    pub async fn connect(&self) -> Result<(), IndexError> {
        self.checked
            .get_or_try_init(|| self.ensure_collection())
            .await
            .map(|_| ())
    }

    async fn ensure_collection(&self) -> Result<(), IndexError> {
        let name = self.collection.clone();
        let exists = retry(self.deadline, || {
            self.client.collection_exists(name.clone())
        })
        .await?;
        if !exists {
            self.create_collection().await?;
        }
        let has_bm25 = self.verify().await?;
        // Every time, not only after creating: idempotent, and a start that died between the two
        // must not leave `source` filters scanning every point.
        retry(self.deadline, || {
            self.client.create_field_index(
                CreateFieldIndexCollectionBuilder::new(
                    &self.collection,
                    "source",
                    FieldType::Keyword,
                )
                .wait(true),
            )
        })
        .await?;
        if !has_bm25 {
            self.declare_bm25().await?;
        }
        // Also finishes an upgrade that was interrupted part-way.
        self.backfill_bm25().await
    }

    async fn create_collection(&self) -> Result<(), IndexError> {
        tracing::info!(collection = %self.collection, endpoint = %self.endpoint, "creating the Qdrant collection");
        let mut dense = VectorsConfigBuilder::default();
        dense.add_named_vector_params(
            DENSE,
            VectorParamsBuilder::new(self.dim as u64, Distance::Cosine),
        );
        let mut sparse = SparseVectorsConfigBuilder::default();
        sparse.add_named_vector_params(
            SPARSE,
            SparseVectorParamsBuilder::default().modifier(Modifier::Idf as i32),
        );
        let created = self
            .client
            .create_collection(
                CreateCollectionBuilder::new(&self.collection)
                    .vectors_config(dense)
                    .sparse_vectors_config(sparse),
            )
            .await;
        match created {
            Ok(_) => {}
            // Another replica created it first.
            Err(QdrantError::ResponseError { status })
                if status.code() == tonic::Code::AlreadyExists => {}
            Err(e) => return Err(failed(e)),
        }
        Ok(())
    }

    /// Checks the dense vector's name, size and distance; returns whether the BM25 vector exists.
    async fn verify(&self) -> Result<bool, IndexError> {
        let name = self.collection.clone();
        let info = retry(self.deadline, || self.client.collection_info(name.clone())).await?;
        let params = info
            .result
            .and_then(|i| i.config)
            .and_then(|c| c.params)
            .ok_or_else(|| IndexError::Engine("collection info without parameters".into()))?;
        let wrong = |what: String| {
            IndexError::Open(format!(
                "the Qdrant collection {:?} at {} {what}; point RAGCHAT_QDRANT_COLLECTION at \
                 another collection (ragchat creates it) or re-create this one",
                self.collection, self.endpoint
            ))
        };
        let dense = match params.vectors_config.and_then(|v| v.config) {
            Some(VectorsConfigKind::ParamsMap(map)) => map.map.get(DENSE).cloned(),
            _ => None,
        };
        let Some(dense) = dense else {
            return Err(wrong(format!("has no vector named {DENSE:?}")));
        };
        if dense.size != self.dim as u64 {
            return Err(wrong(format!(
                "holds {}-dimensional vectors but the embedder makes {}-dimensional ones",
                dense.size, self.dim
            )));
        }
        if dense.distance != Distance::Cosine as i32 {
            return Err(wrong(format!("does not use cosine distance for {DENSE:?}")));
        }
        Ok(params
            .sparse_vectors_config
            .is_some_and(|s| s.map.contains_key(SPARSE)))
    }

    /// Declares the BM25 vector in a collection made before hybrid retrieval.
    async fn declare_bm25(&self) -> Result<(), IndexError> {
        tracing::info!(collection = %self.collection, "declaring BM25 vectors in a collection made before hybrid retrieval");
        let declared = self
            .client
            .create_vector_name(
                CreateVectorNameRequestBuilder::new(
                    &self.collection,
                    SPARSE,
                    SparseVectorCreationConfigBuilder::default().modifier(Modifier::Idf as i32),
                )
                .wait(true),
            )
            .await;
        match declared {
            Ok(_) => Ok(()),
            Err(QdrantError::ResponseError { status })
                if status.code() == tonic::Code::Unimplemented =>
            {
                Err(IndexError::Open(format!(
                    "the Qdrant collection {:?} at {} was made before hybrid retrieval, and this \
                     server cannot add its BM25 vector (that needs Qdrant 1.18 or newer): upgrade \
                     the server, or point RAGCHAT_QDRANT_COLLECTION at a new collection and \
                     re-ingest (or `ragchat index import` an export)",
                    self.collection, self.endpoint
                )))
            }
            Err(e) => Err(failed(e)),
        }
    }

    /// Gives every point without a BM25 vector one, from the chunk text it stores.
    async fn backfill_bm25(&self) -> Result<(), IndexError> {
        let without_bm25 = || Filter::must_not([Condition::has_vector(SPARSE)]);
        let missing = retry(self.deadline, || {
            self.client.count(
                CountPointsBuilder::new(&self.collection)
                    .filter(without_bm25())
                    .exact(true),
            )
        })
        .await?
        .result
        .map_or(0, |r| r.count);
        if missing == 0 {
            return Ok(());
        }
        tracing::info!(collection = %self.collection, chunks = missing, "adding BM25 vectors from the stored chunk text");
        // Only the BM25 vector is written, so a chunk that a concurrent ingest replaced or
        // deleted meanwhile is never brought back; updating a point deleted since the page was
        // read fails the call, and the next connect resumes with what is still missing.
        let mut from = None;
        loop {
            let (points, next) = self
                .scroll_page(from, BACKFILL_BATCH, Some(without_bm25()))
                .await?;
            if !points.is_empty() {
                let vectors: Vec<PointVectors> = points
                    .iter()
                    .map(|p| PointVectors {
                        id: Some(p.id.to_string().into()),
                        vectors: Some(
                            NamedVectors::default()
                                .add_vector(SPARSE, self.bm25_vector(&p.payload.text))
                                .into(),
                        ),
                    })
                    .collect();
                retry(self.deadline, || {
                    self.client.update_vectors(
                        UpdatePointVectorsBuilder::new(&self.collection, vectors.clone())
                            .wait(true),
                    )
                })
                .await?;
            }
            match next {
                Some(id) => from = Some(id),
                None => return Ok(()),
            }
        }
    }

    /// A chunk text's BM25 vector in the client's form.
    fn bm25_vector(&self, text: &str) -> Vector {
        let sparse = self.bm25.document(text);
        let pairs: Vec<(u32, f32)> = sparse.indices.into_iter().zip(sparse.values).collect();
        Vector::from(pairs)
    }

    fn point(&self, p: ChunkPoint) -> Result<PointStruct, IndexError> {
        let vectors = NamedVectors::default()
            .add_vector(SPARSE, self.bm25_vector(&p.payload.text))
            .add_vector(DENSE, Vector::from(p.vector));
        let payload = Payload::try_from(
            serde_json::to_value(&p.payload)
                .map_err(|e| IndexError::Engine(format!("payload: {e}")))?,
        )
        .map_err(failed)?;
        Ok(PointStruct::new(p.id.to_string(), vectors, payload))
    }

    async fn upsert_points(&self, points: Vec<ChunkPoint>) -> Result<(), IndexError> {
        if points.is_empty() {
            return Ok(());
        }
        let points = points
            .into_iter()
            .map(|p| self.point(p))
            .collect::<Result<Vec<_>, _>>()?;
        retry(self.deadline, || {
            self.client.upsert_points(
                UpsertPointsBuilder::new(&self.collection, points.clone()).wait(true),
            )
        })
        .await
        .map(drop)
    }

    async fn scroll_page(
        &self,
        from: Option<Uuid>,
        limit: usize,
        filter: Option<Filter>,
    ) -> Result<(Vec<ChunkPoint>, Option<Uuid>), IndexError> {
        let response = retry(self.deadline, || {
            let mut request = ScrollPointsBuilder::new(&self.collection)
                .limit(limit as u32)
                .with_payload(true)
                .with_vectors(true);
            if let Some(filter) = &filter {
                request = request.filter(filter.clone());
            }
            if let Some(id) = from {
                request = request.offset(id.to_string());
            }
            self.client.scroll(request)
        })
        .await?;
        let uuid = |s: String| {
            Uuid::parse_str(&s).map_err(|e| IndexError::Engine(format!("point id {s:?}: {e}")))
        };
        let points = response
            .result
            .into_iter()
            .map(|p| {
                let id = uuid(point_id_string(p.id)?)?;
                let vector = match p.vectors.as_ref().and_then(|v| v.get_vector_by_name(DENSE)) {
                    Some(VectorOut::Dense(d)) => d.data,
                    _ => {
                        return Err(IndexError::Engine(format!(
                            "point {id} has no {DENSE:?} vector"
                        )));
                    }
                };
                Ok(ChunkPoint {
                    id,
                    vector,
                    payload: payload_of(p.payload)?,
                })
            })
            .collect::<Result<Vec<_>, IndexError>>()?;
        let next = match response.next_page_offset {
            Some(id) => Some(uuid(point_id_string(Some(id))?)?),
            None => None,
        };
        Ok((points, next))
    }
}

#[async_trait]
impl VectorIndex for QdrantIndex {
    fn dim(&self) -> usize {
        self.dim
    }

    fn describe(&self) -> String {
        format!("qdrant:{}/{}", self.endpoint, self.collection)
    }

    async fn search(&self, query: Query, k: usize) -> Result<Vec<Hit>, IndexError> {
        self.connect().await?;
        let dense = VectorInput::new_dense(query.vector);
        let request = match query.mode {
            RetrievalMode::Dense => QueryPointsBuilder::new(&self.collection)
                .query(QdrantQuery::new_nearest(dense))
                .using(DENSE),
            RetrievalMode::Hybrid => {
                let sparse = self.bm25.query(&query.text);
                let limit = prefetch_limit(k) as u64;
                QueryPointsBuilder::new(&self.collection)
                    .add_prefetch(
                        PrefetchQueryBuilder::default()
                            .query(QdrantQuery::new_nearest(dense))
                            .using(DENSE)
                            .limit(limit),
                    )
                    .add_prefetch(
                        PrefetchQueryBuilder::default()
                            .query(QdrantQuery::new_nearest(VectorInput::new_sparse(
                                sparse.indices,
                                sparse.values,
                            )))
                            .using(SPARSE)
                            .limit(limit),
                    )
                    // The same k as the embedded index (the server's own default is 2);
                    // parameterised RRF needs Qdrant ≥ 1.16.
                    .query(QdrantQuery::new_rrf(Rrf {
                        k: Some(RRF_K as u32),
                        weights: Vec::new(),
                    }))
            }
        };
        let request = request.limit(k as u64).with_payload(true);
        let response = retry(self.deadline, || self.client.query(request.clone())).await?;
        let mut hits = response
            .result
            .into_iter()
            .map(|p| {
                Ok(Hit {
                    id: point_id_string(p.id)?,
                    score: p.score,
                    payload: payload_of(p.payload)?,
                })
            })
            .collect::<Result<Vec<_>, IndexError>>()?;
        rank(&mut hits);
        Ok(hits)
    }

    async fn source_hash(&self, source: &str) -> Result<Option<String>, IndexError> {
        self.connect().await?;
        let response = retry(self.deadline, || {
            self.client.scroll(
                ScrollPointsBuilder::new(&self.collection)
                    .filter(source_filter(source))
                    .limit(1)
                    .with_payload(true),
            )
        })
        .await?;
        match response.result.into_iter().next() {
            Some(p) => Ok(Some(payload_of(p.payload)?.doc_hash)),
            None => Ok(None),
        }
    }

    async fn replace_source(
        &self,
        source: &str,
        points: Vec<ChunkPoint>,
    ) -> Result<(), IndexError> {
        self.connect().await?;
        retry(self.deadline, || {
            self.client.delete_points(
                DeletePointsBuilder::new(&self.collection)
                    .points(source_filter(source))
                    .wait(true),
            )
        })
        .await?;
        self.upsert_points(points).await
    }

    async fn count(&self) -> Result<usize, IndexError> {
        self.connect().await?;
        let response = retry(self.deadline, || {
            self.client
                .count(CountPointsBuilder::new(&self.collection).exact(true))
        })
        .await?;
        Ok(response.result.map_or(0, |r| r.count as usize))
    }

    async fn scroll(
        &self,
        from: Option<Uuid>,
        limit: usize,
    ) -> Result<(Vec<ChunkPoint>, Option<Uuid>), IndexError> {
        self.connect().await?;
        self.scroll_page(from, limit, None).await
    }

    async fn upsert(&self, points: Vec<ChunkPoint>) -> Result<(), IndexError> {
        self.connect().await?;
        self.upsert_points(points).await
    }

    async fn finish_ingest(&self) -> Result<(), IndexError> {
        // The server indexes and persists by itself; writes already waited to be applied.
        Ok(())
    }

    async fn ping(&self) -> Result<(), IndexError> {
        self.connect().await?;
        // The collection may have been deleted since: readiness must say so.
        let name = self.collection.clone();
        if retry(self.deadline, || {
            self.client.collection_exists(name.clone())
        })
        .await?
        {
            Ok(())
        } else {
            Err(IndexError::Engine(format!(
                "the Qdrant collection {:?} no longer exists at {}",
                self.collection, self.endpoint
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_shown_never_carries_credentials_or_paths() {
        assert_eq!(
            endpoint_of("https://user:secret@abc.cloud.qdrant.io:6334/x?api-key=k"),
            "https://abc.cloud.qdrant.io:6334"
        );
        assert_eq!(
            endpoint_of("http://127.0.0.1:6334"),
            "http://127.0.0.1:6334"
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_is_retried_then_a_bounded_engine_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let index = QdrantIndex::new(
            &QdrantSettings {
                url: format!("http://127.0.0.1:{port}"),
                api_key: None,
                collection: "ragchat".into(),
                timeout: Duration::from_millis(500),
            },
            384,
        )
        .expect("client");
        let started = std::time::Instant::now();
        let err = index.ping().await.expect_err("nothing listens");
        eprintln!("ERR {err:?} after {:?}", started.elapsed());
        assert!(matches!(err, IndexError::Engine(_)), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
