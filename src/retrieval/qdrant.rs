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
use qdrant_client::qdrant::with_payload_selector::SelectorOptions;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, DeletePointsBuilder, Filter, NamedVectors,
    PayloadIncludeSelector, PointId, PointStruct, PrefetchQueryBuilder, Query as QdrantQuery,
    QueryPointsBuilder, Rrf, ScrollPointsBuilder, UpsertPointsBuilder, Vector, VectorInput,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;
use uuid::Uuid;

mod schema;

use super::bm25::{Bm25, SPARSE};
use super::edge::DENSE;
use super::{
    ChunkPayload, ChunkPoint, Hit, IndexError, IndexTransfer, IndexWriter, IndexedSource, Query,
    RRF_K, VectorIndex, prefetch_limit, rank,
};
use crate::config::{QdrantSettings, RetrievalMode, redact_endpoint};

/// Attempts per call for transient failures (unavailable, deadline exceeded, throttled).
const ATTEMPTS: u32 = 3;

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
            endpoint: redact_endpoint(&settings.url),
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

#[async_trait]
impl IndexWriter for QdrantIndex {
    async fn count(&self) -> Result<usize, IndexError> {
        self.connect().await?;
        let response = retry(self.deadline, || {
            self.client
                .count(CountPointsBuilder::new(&self.collection).exact(true))
        })
        .await?;
        Ok(response.result.map_or(0, |r| r.count as usize))
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

    async fn sources(&self) -> Result<Vec<IndexedSource>, IndexError> {
        self.connect().await?;
        let mut docs = std::collections::BTreeMap::new();
        let mut from: Option<PointId> = None;
        loop {
            let response = retry(self.deadline, || {
                let mut request = ScrollPointsBuilder::new(&self.collection)
                    .limit(1024)
                    .with_payload(SelectorOptions::Include(PayloadIncludeSelector::new(vec![
                        "source".to_owned(),
                        "ingested_at".to_owned(),
                    ])))
                    .with_vectors(false);
                if let Some(id) = &from {
                    request = request.offset(id.clone());
                }
                self.client.scroll(request)
            })
            .await?;
            for point in response.result {
                let json = serde_json::Value::from(Payload::from(point.payload));
                super::tally(&mut docs, json)?;
            }
            match response.next_page_offset {
                Some(id) => from = Some(id),
                None => return Ok(docs.into_values().collect()),
            }
        }
    }

    async fn finish_ingest(&self) -> Result<(), IndexError> {
        // The server indexes and persists by itself; writes already waited to be applied.
        Ok(())
    }
}

#[async_trait]
impl IndexTransfer for QdrantIndex {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(matches!(err, IndexError::Engine(_)), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
