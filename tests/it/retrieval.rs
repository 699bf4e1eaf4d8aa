//! Retrieval with real MiniLM embeddings on every index backend: the embedded engine always,
//! and a Qdrant server when `RAGCHAT_TEST_QDRANT_URL` names one (no server can be installed on
//! our CI machine, so that half says loudly that it skipped). Hybrid (dense + BM25 fused with
//! RRF) against dense, the in-place upgrade of an index made before hybrid retrieval, and moving
//! an index between backends.

use std::path::Path;
use std::sync::{Arc, Once};
use std::time::Duration;

use qdrant_edge::{
    Condition, CountRequestBuilder, CreateVectorName, Distance, EdgeConfigBuilder, EdgeShard,
    EdgeVectorParamsBuilder, Filter, HasVectorCondition, Modifier, PointId, PointInsertOperations,
    PointOperations, PointStruct, SparseVectorConfig, UpdateOperation, VectorNameConfig,
    VectorNameOperations, Vectors,
};
use ragchat::config::QdrantSettings;
use ragchat::config::{IndexMemory, RetrievalMode};
use ragchat::retrieval::{
    ChunkPayload, EdgeIndex, IndexTransfer, IndexWriter, QdrantIndex, VectorIndex,
};

use crate::support::{embedder, query};

/// One index to run a backend-independent test against; cleans up after itself.
pub struct Backend {
    pub name: &'static str,
    pub index: Arc<dyn IndexTransfer>,
    _dir: Option<tempfile::TempDir>,
    collection: Option<(String, String)>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some((url, collection)) = self.collection.take() {
            // Best effort, on a thread of its own: Drop cannot await.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let key = std::env::var("RAGCHAT_TEST_QDRANT_API_KEY").ok();
                // The pair under test is client 1.20 / server 1.18 (README): no version probe.
                let client = qdrant_client::Qdrant::from_url(&url)
                    .api_key(key)
                    .skip_compatibility_check()
                    .build();
                if let (Ok(rt), Ok(client)) = (rt, client) {
                    let _ = rt.block_on(client.delete_collection(collection));
                }
            })
            .join();
        }
    }
}

/// The test Qdrant server, if this run has one. Without one the server half of the retrieval
/// tests is skipped, and says so where `make test` shows it even when every test passes: the
/// notices file it prints at the end (`RAGCHAT_TEST_NOTICES`). A run that asked for the server
/// everywhere (`RAGCHAT_TEST_INDEX=qdrant`) fails instead of skipping.
fn qdrant_url() -> Option<String> {
    static SKIP: Once = Once::new();
    let url = std::env::var("RAGCHAT_TEST_QDRANT_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        assert!(
            !std::env::var("RAGCHAT_TEST_INDEX").is_ok_and(|v| v == "qdrant"),
            "RAGCHAT_TEST_INDEX=qdrant without RAGCHAT_TEST_QDRANT_URL: nothing may be skipped"
        );
        SKIP.call_once(|| {
            crate::support::notice(
                "SKIPPED: the Qdrant server half of the retrieval tests (no \
                 RAGCHAT_TEST_QDRANT_URL); the embedded index ran them",
            );
        });
    }
    url
}

/// A fresh, empty index of every backend this run can reach.
pub fn backends() -> Vec<Backend> {
    let mut all = vec![edge_backend()];
    all.extend(qdrant_backend());
    all
}

fn edge_backend() -> Backend {
    let dir = tempfile::tempdir().expect("data");
    let edge =
        EdgeIndex::open(dir.path(), embedder().dim(), IndexMemory::default()).expect("index");
    Backend {
        name: "edge",
        index: Arc::new(edge),
        _dir: Some(dir),
        collection: None,
    }
}

/// A fresh collection on the test Qdrant server, if one is configured.
pub fn qdrant_backend() -> Option<Backend> {
    let url = qdrant_url()?;
    let collection = format!("ragchat_test_{}", uuid::Uuid::new_v4().simple());
    let index = QdrantIndex::new(
        &QdrantSettings {
            url: url.clone(),
            api_key: std::env::var("RAGCHAT_TEST_QDRANT_API_KEY")
                .ok()
                .map(Into::into),
            collection: collection.clone(),
            timeout: Duration::from_secs(10),
        },
        embedder().dim(),
    )
    .expect("client");
    Some(Backend {
        name: "qdrant",
        index: Arc::new(index),
        _dir: None,
        collection: Some((url, collection)),
    })
}

fn rare_terms() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("eval/corpus/rare-terms")
}

/// Ingests the rare-terms corpus into `index`, as `ragchat ingest` would.
async fn ingest_rare_terms(index: &dyn IndexWriter) -> ragchat::ingest::Summary {
    ragchat::ingest::run(&[rare_terms()], embedder().as_ref(), index, 200, 30)
        .await
        .expect("ingest")
}

/// An embedded index holding the rare-terms corpus (and the directory that keeps it).
async fn rare_terms_edge_index() -> (tempfile::TempDir, EdgeIndex) {
    let dir = tempfile::tempdir().expect("data");
    let index =
        EdgeIndex::open(dir.path(), embedder().dim(), IndexMemory::default()).expect("index");
    ingest_rare_terms(&index).await;
    (dir, index)
}

async fn top_source(index: &dyn VectorIndex, text: &str, mode: RetrievalMode) -> String {
    let hits = index
        .search(query(embedder().as_ref(), text, mode).await, 3)
        .await
        .expect("search");
    let top = hits.first().expect("a hit");
    Path::new(&top.payload.source)
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

#[tokio::test]
async fn hybrid_finds_the_document_an_exact_code_names() {
    for backend in backends() {
        hybrid_finds_codes_on(backend.index.as_ref()).await;
    }
}

async fn hybrid_finds_codes_on(index: &dyn IndexWriter) {
    ingest_rare_terms(index).await;
    // Near-identical error pages that differ only in their code: the embedding of a question
    // barely changes with the digits, the BM25 term "4471" does.
    for (question, want) in [
        ("What does error E-4471 mean?", "err-e4471.md"),
        ("How do I fix E-4417?", "err-e4417.md"),
        ("What is GW-LTE4?", "gateway-osprey.md"),
        ("Who is Tobias Achterberg?", "people-support.md"),
    ] {
        assert_eq!(
            top_source(index, question, RetrievalMode::Hybrid).await,
            want,
            "{question} on {}",
            index.describe()
        );
    }
    // Dense still answers plain-language questions.
    assert_eq!(
        top_source(
            index,
            "How much does recalibration cost?",
            RetrievalMode::Dense
        )
        .await,
        "calibration.md"
    );
}

fn payload(source: &str, text: &str) -> ChunkPayload {
    ChunkPayload {
        source: source.into(),
        title: source.into(),
        chunk_index: 0,
        text: text.into(),
        doc_hash: "h".into(),
        page: None,
        ingested_at: None,
    }
}

/// Writes an index the way ragchat did before hybrid retrieval: one dense vector per point.
async fn dense_only_index(dir: &Path, docs: &[(&str, &str)]) {
    let e = embedder();
    let config = EdgeConfigBuilder::new()
        .vector(
            "dense",
            EdgeVectorParamsBuilder::new(e.dim(), Distance::Cosine).build(),
        )
        .build();
    let shard = EdgeShard::new(dir, config).expect("shard");
    let texts = docs.iter().map(|(_, t)| (*t).to_owned()).collect();
    let vectors = e.embed(texts).await.expect("embeds");
    let points = docs
        .iter()
        .zip(vectors)
        .map(|((source, text), vector)| {
            let json = serde_json::to_value(payload(source, text)).expect("json");
            PointStruct::new(
                PointId::Uuid(ragchat::retrieval::chunk_id(source, 0)),
                Vectors::new_named([("dense", vector)]),
                json,
            )
            .into()
        })
        .collect();
    shard
        .update(UpdateOperation::PointOperation(
            PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
        ))
        .expect("upsert");
    // As ingest left it: optimised (immutable segments), flushed.
    shard.optimize().expect("optimize");
    shard.flush().expect("flush");
}

#[tokio::test]
async fn an_index_made_before_hybrid_retrieval_is_upgraded_in_place() {
    let data = tempfile::tempdir().expect("data");
    let docs = [
        (
            "a.md",
            "Error E-4471 means the battery cells are out of balance.",
        ),
        (
            "b.md",
            "Error E-4417 means the humidity probe reads out of range.",
        ),
        ("c.md", "The ferry to the island leaves at noon every day."),
    ];
    dense_only_index(data.path(), &docs).await;

    let index = EdgeIndex::open(data.path(), embedder().dim(), IndexMemory::default())
        .expect("opens and upgrades");
    assert_eq!(index.count().await.expect("count"), 3, "nothing lost");
    assert_eq!(
        top_source(&index, "E-4417", RetrievalMode::Hybrid).await,
        "b.md"
    );
    drop(index);
    assert_eq!(
        missing_bm25(data.path()),
        0,
        "every point got its BM25 vector"
    );
    // The upgrade is persisted: a second open finds the BM25 vectors and changes nothing.
    let again =
        EdgeIndex::open(data.path(), embedder().dim(), IndexMemory::default()).expect("reopens");
    assert_eq!(again.count().await.expect("count"), 3);
    assert_eq!(
        top_source(&again, "E-4471", RetrievalMode::Hybrid).await,
        "a.md"
    );
}

#[tokio::test]
async fn an_upgrade_interrupted_after_declaring_bm25_is_finished_on_the_next_open() {
    let data = tempfile::tempdir().expect("data");
    let docs = [
        (
            "a.md",
            "Error E-4471 means the battery cells are out of balance.",
        ),
        (
            "b.md",
            "Error E-4417 means the humidity probe reads out of range.",
        ),
        ("c.md", "The and of it."),
    ];
    dense_only_index(data.path(), &docs).await;
    {
        // The process died right after declaring the BM25 vector, before filling it in.
        let shard = EdgeShard::load(data.path(), None).expect("loads");
        shard
            .update(UpdateOperation::VectorNameOperation(
                VectorNameOperations::CreateVectorName(CreateVectorName {
                    vector_name: "bm25".into(),
                    config: VectorNameConfig::sparse(SparseVectorConfig {
                        modifier: Some(Modifier::Idf),
                        datatype: None,
                    }),
                }),
            ))
            .expect("declare");
        shard.flush().expect("flush");
    }
    let index =
        EdgeIndex::open(data.path(), embedder().dim(), IndexMemory::default()).expect("opens");
    assert_eq!(index.count().await.expect("count"), 3);
    assert_eq!(
        top_source(&index, "E-4417", RetrievalMode::Hybrid).await,
        "b.md"
    );
    assert_eq!(
        top_source(&index, "E-4471", RetrievalMode::Hybrid).await,
        "a.md"
    );
    drop(index);
    // Every point has its BM25 vector now, even one whose text is all stop words, so the next
    // open has nothing to do.
    assert_eq!(missing_bm25(data.path()), 0);
}

/// A client of the test server at `url`.
fn server_client(url: &str) -> qdrant_client::Qdrant {
    qdrant_client::Qdrant::from_url(url)
        .api_key(std::env::var("RAGCHAT_TEST_QDRANT_API_KEY").ok())
        .skip_compatibility_check()
        .build()
        .expect("client")
}

/// `collection` on the server as a ragchat from before hybrid retrieval made it: a dense vector
/// only, the chunks of `docs`.
async fn dense_only_collection(
    client: &qdrant_client::Qdrant,
    collection: &str,
    docs: &[(&str, &str)],
) {
    use qdrant_client::qdrant::{
        CreateCollectionBuilder, Distance, NamedVectors, PointStruct, UpsertPointsBuilder, Vector,
        VectorParamsBuilder, VectorsConfigBuilder,
    };
    let e = embedder();
    let mut dense = VectorsConfigBuilder::default();
    dense.add_named_vector_params(
        "dense",
        VectorParamsBuilder::new(e.dim() as u64, Distance::Cosine),
    );
    client
        .create_collection(CreateCollectionBuilder::new(collection).vectors_config(dense))
        .await
        .expect("create");
    let vectors = e
        .embed(docs.iter().map(|(_, t)| (*t).to_owned()).collect())
        .await
        .expect("embeds");
    let points: Vec<PointStruct> = docs
        .iter()
        .zip(vectors)
        .map(|((source, text), vector)| {
            let json = serde_json::to_value(payload(source, text)).expect("json");
            PointStruct::new(
                ragchat::retrieval::chunk_id(source, 0).to_string(),
                NamedVectors::default().add_vector("dense", Vector::new_dense(vector)),
                qdrant_client::Payload::try_from(json).expect("payload"),
            )
        })
        .collect();
    client
        .upsert_points(UpsertPointsBuilder::new(collection, points).wait(true))
        .await
        .expect("upsert");
}

/// Points of `collection` on the server without a BM25 vector.
async fn missing_bm25_on_server(client: &qdrant_client::Qdrant, collection: &str) -> u64 {
    use qdrant_client::qdrant::{Condition, CountPointsBuilder, Filter};
    client
        .count(
            CountPointsBuilder::new(collection)
                .filter(Filter::must_not([Condition::has_vector("bm25")]))
                .exact(true),
        )
        .await
        .expect("count")
        .result
        .map_or(0, |r| r.count)
}

#[tokio::test]
async fn a_server_collection_made_before_hybrid_retrieval_is_upgraded_in_place() {
    let docs = [
        (
            "a.md",
            "Error E-4471 means the battery cells are out of balance.",
        ),
        (
            "b.md",
            "Error E-4417 means the humidity probe reads out of range.",
        ),
        ("c.md", "The and of it."),
    ];
    // As made before hybrid retrieval; then the same, with an upgrade that died right after
    // declaring the BM25 vector.
    for interrupted in [false, true] {
        let Some(backend) = qdrant_backend() else {
            return;
        };
        let (url, collection) = backend.collection.clone().expect("a server collection");
        let client = server_client(&url);
        dense_only_collection(&client, &collection, &docs).await;
        if interrupted {
            use qdrant_client::qdrant::{
                CreateVectorNameRequestBuilder, Modifier, SparseVectorCreationConfigBuilder,
            };
            client
                .create_vector_name(
                    CreateVectorNameRequestBuilder::new(
                        &collection,
                        "bm25",
                        SparseVectorCreationConfigBuilder::default().modifier(Modifier::Idf as i32),
                    )
                    .wait(true),
                )
                .await
                .expect("declare");
        }
        assert_eq!(missing_bm25_on_server(&client, &collection).await, 3);
        let index = backend.index.as_ref();
        assert_eq!(index.count().await.expect("count"), 3, "nothing lost");
        assert_eq!(
            top_source(index, "E-4417", RetrievalMode::Hybrid).await,
            "b.md"
        );
        assert_eq!(
            top_source(index, "E-4471", RetrievalMode::Hybrid).await,
            "a.md"
        );
        assert_eq!(
            missing_bm25_on_server(&client, &collection).await,
            0,
            "every point got its BM25 vector (interrupted: {interrupted})"
        );
    }
}

/// Points of the index in `dir` without a BM25 vector.
fn missing_bm25(dir: &Path) -> usize {
    let shard = EdgeShard::load(dir, None).expect("loads");
    shard
        .count(
            CountRequestBuilder::new()
                .filter(Filter::new_must_not(Condition::HasVector(
                    HasVectorCondition::from("bm25".to_owned()),
                )))
                .exact(true)
                .build(),
        )
        .expect("count")
}

#[tokio::test]
async fn an_index_moves_to_another_index_whole() {
    let (_dir, from) = rare_terms_edge_index().await;
    let mut file = Vec::new();
    let exported = ragchat::retrieval::transfer::export(&from, &mut file)
        .await
        .expect("export");
    assert_eq!(exported, from.count().await.expect("count"));
    for backend in backends() {
        import_into(&from, &file, exported, backend.index.as_ref()).await;
    }
}

async fn import_into(
    from: &dyn IndexTransfer,
    file: &[u8],
    exported: usize,
    to: &dyn IndexTransfer,
) {
    let imported = ragchat::retrieval::transfer::import(file, to)
        .await
        .expect("import");
    assert_eq!(imported, exported);
    assert_eq!(to.count().await.expect("count"), exported);

    // Same ids, payloads and vectors: the same answers, and re-ingest sees nothing changed.
    for mode in [RetrievalMode::Dense, RetrievalMode::Hybrid] {
        for question in [
            "What does error E-4471 mean?",
            "Who maintains the firmware?",
        ] {
            assert_eq!(
                top_source(from, question, mode).await,
                top_source(to, question, mode).await,
                "{question} ({mode}) on {}",
                to.describe()
            );
        }
    }
    let again = ingest_rare_terms(to).await;
    assert_eq!(
        again.indexed, 0,
        "every document is already there, unchanged"
    );
}

#[tokio::test]
async fn bad_imports_are_refused_with_the_reason() {
    let (_dir, from) = rare_terms_edge_index().await;
    let mut export = Vec::new();
    let exported = ragchat::retrieval::transfer::export(&from, &mut export)
        .await
        .expect("export");
    let header_and_two: Vec<u8> = export
        .split_inclusive(|b| *b == b'\n')
        .take(3)
        .flatten()
        .copied()
        .collect();
    for backend in backends() {
        let index = backend.index.as_ref();
        // Not an export, empty, another embedder's vectors: refused before anything is written.
        for (file, reason) in [
            (&b"{\"not\":\"a point\"}\n"[..], "line 1"),
            (&b""[..], "line 1"),
            (
                &b"{\"format\":\"ragchat-index\",\"version\":1,\"dim\":1536,\"chunks\":0}\n"[..],
                "1536",
            ),
        ] {
            let err = ragchat::retrieval::transfer::import(file, index)
                .await
                .expect_err("refused");
            assert!(err.to_string().contains(reason), "{err}");
        }
        assert_eq!(index.count().await.expect("count"), 0, "{}", backend.name);
        // A cut-off export is an error, not a quiet partial success.
        let err = ragchat::retrieval::transfer::import(header_and_two.as_slice(), index)
            .await
            .expect_err("incomplete");
        assert!(
            err.to_string()
                .contains(&format!("announces {exported} chunks")),
            "{err}"
        );
        // An index that already holds chunks does not take an import (it would merge).
        let err = ragchat::retrieval::transfer::import(export.as_slice(), index)
            .await
            .expect_err("not empty");
        assert!(err.to_string().contains("already holds 2 chunks"), "{err}");
    }
}

/// `make eval`'s names-and-codes set as a floor: a change to retrieval must keep these scores
/// (docs/benchmarks.md has the figures: dense MRR 0.843, hybrid 0.920, recall@5 1.0).
#[tokio::test]
async fn retrieval_keeps_its_scores_on_the_labelled_rare_terms_set() {
    let e = embedder();
    let (_dir, index) = rare_terms_edge_index().await;
    let set = Path::new(env!("CARGO_MANIFEST_DIR")).join("eval/rare-terms.jsonl");
    let cases = ragchat::eval::load(&set).expect("set");
    let reports = ragchat::eval::run(
        &cases,
        e.as_ref(),
        &index,
        &[RetrievalMode::Dense, RetrievalMode::Hybrid],
        None,
    )
    .await
    .expect("eval");
    let (dense, hybrid) = (&reports[0], &reports[1]);
    assert!(hybrid.mrr >= 0.90, "hybrid MRR fell to {:.3}", hybrid.mrr);
    assert_eq!(
        hybrid.recall[&5], 1.0,
        "hybrid recall@5 {:?}",
        hybrid.recall
    );
    assert!(dense.mrr >= 0.80, "dense MRR fell to {:.3}", dense.mrr);
    assert!(
        hybrid.mrr > dense.mrr,
        "hybrid ({:.3}) must beat dense ({:.3}) on names and codes",
        hybrid.mrr,
        dense.mrr
    );
}

/// The dense vectors' placement as stored in the index's own config.
fn stored_placement(dir: &Path) -> Option<qdrant_edge::Memory> {
    qdrant_edge::EdgeConfig::load(dir)
        .expect("a config")
        .expect("readable")
        .vectors
        .get("dense")
        .and_then(|v| v.memory_placement())
}

#[tokio::test]
async fn changing_the_vector_placement_moves_the_index_and_keeps_its_answers() {
    let (dir, index) = rare_terms_edge_index().await;
    let questions = [
        "What does error E-4417 mean?",
        "Who maintains part PX-2209?",
    ];
    let mut before = Vec::new();
    for q in questions {
        before.push(sources(&index, q).await);
    }
    let count = index.count().await.expect("count");
    drop(index);
    assert_eq!(
        stored_placement(dir.path()),
        Some(qdrant_edge::Memory::Cold)
    );

    for memory in [IndexMemory::Cached, IndexMemory::Cold] {
        let index = EdgeIndex::open(dir.path(), embedder().dim(), memory).expect("reopens");
        let want = match memory {
            IndexMemory::Cold => qdrant_edge::Memory::Cold,
            IndexMemory::Cached => qdrant_edge::Memory::Cached,
        };
        assert_eq!(
            stored_placement(dir.path()),
            Some(want),
            "{memory:?} took effect"
        );
        assert_segments_placed(dir.path(), memory);
        assert_eq!(index.count().await.expect("count"), count, "nothing lost");
        for (q, want) in questions.iter().zip(&before) {
            assert_eq!(&sources(&index, q).await, want, "{memory:?}: {q}");
        }
    }
}

/// Every segment's dense vector storage, as the engine wrote it down.
fn segment_storage(dir: &Path) -> Vec<String> {
    let mut kinds = Vec::new();
    for entry in std::fs::read_dir(dir.join("segments")).expect("segments") {
        let path = entry.expect("entry").path().join("segment.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let v: serde_json::Value = serde_json::from_str(&text).expect("segment.json");
            kinds.push(
                v["config"]["vector_data"]["dense"]["storage_type"]
                    .as_str()
                    .expect("storage type")
                    .to_owned(),
            );
        }
    }
    assert!(!kinds.is_empty(), "no segments in {}", dir.display());
    kinds
}

/// The segments hold their vectors in memory exactly when `cached` is configured.
fn assert_segments_placed(dir: &Path, memory: IndexMemory) {
    let kinds = segment_storage(dir);
    let in_ram = memory == IndexMemory::Cached;
    assert!(
        kinds.iter().all(|k| k.starts_with("InRam") == in_ram),
        "{memory:?}: {kinds:?}"
    );
}

#[tokio::test]
async fn a_placement_move_cut_off_part_way_is_finished_at_the_next_open() {
    let (dir, index) = rare_terms_edge_index().await;
    let count = index.count().await.expect("count");
    drop(index);
    {
        // The process died after the engine saved the new placement, before the rebuild.
        std::fs::write(dir.path().join("ragchat-moving-vectors"), b"").expect("marker");
        let stored = qdrant_edge::EdgeConfig::load(dir.path())
            .expect("config")
            .expect("readable");
        let mut dense = stored.vectors.get("dense").expect("dense").clone();
        dense.memory = Some(qdrant_edge::Memory::Cached);
        let config = EdgeConfigBuilder::new().vector("dense", dense).build();
        let shard = EdgeShard::load(dir.path(), Some(config)).expect("loads");
        shard.flush().expect("flush");
    }
    assert_segments_placed(dir.path(), IndexMemory::Cold);
    let index = EdgeIndex::open(dir.path(), embedder().dim(), IndexMemory::Cached).expect("opens");
    assert_segments_placed(dir.path(), IndexMemory::Cached);
    assert!(!dir.path().join("ragchat-moving-vectors").exists());
    assert_eq!(index.count().await.expect("count"), count);
}

/// The sources of the top five hybrid hits, in order.
async fn sources(index: &dyn VectorIndex, text: &str) -> Vec<String> {
    index
        .search(
            query(embedder().as_ref(), text, RetrievalMode::Hybrid).await,
            5,
        )
        .await
        .expect("search")
        .into_iter()
        .map(|h| h.payload.source)
        .collect()
}
