//! Retrieval on the real embedded index with real MiniLM embeddings: hybrid (dense + BM25 fused
//! with RRF) against dense, the in-place upgrade of an index made before hybrid retrieval, and
//! moving an index out and back in.

use std::path::Path;
use std::sync::Arc;

use qdrant_edge::{
    Distance, EdgeConfigBuilder, EdgeShard, EdgeVectorParamsBuilder, PointId,
    PointInsertOperations, PointOperations, PointStruct, UpdateOperation, Vectors,
};
use ragchat::config::RetrievalMode;
use ragchat::retrieval::{ChunkPayload, EdgeIndex, VectorIndex};

use crate::support::{embedder, query};

fn rare_terms() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("eval/corpus/rare-terms")
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
    let data = tempfile::tempdir().expect("data");
    let e = embedder();
    let index = EdgeIndex::open(data.path(), e.dim()).expect("index");
    ragchat::ingest::run(&[rare_terms()], e.as_ref(), &index, 200, 30)
        .await
        .expect("ingest");
    // Near-identical error pages that differ only in their code: the embedding of a question
    // barely changes with the digits, the BM25 term "4471" does.
    for (question, want) in [
        ("What does error E-4471 mean?", "err-e4471.md"),
        ("How do I fix E-4417?", "err-e4417.md"),
        ("What is GW-LTE4?", "gateway-osprey.md"),
        ("Who is Tobias Achterberg?", "people-support.md"),
    ] {
        assert_eq!(
            top_source(&index, question, RetrievalMode::Hybrid).await,
            want,
            "{question}"
        );
    }
    // Dense still answers plain-language questions.
    assert_eq!(
        top_source(
            &index,
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

    let index = EdgeIndex::open(data.path(), embedder().dim()).expect("opens and upgrades");
    assert_eq!(index.count().await.expect("count"), 3, "nothing lost");
    assert_eq!(
        top_source(&index, "E-4417", RetrievalMode::Hybrid).await,
        "b.md"
    );
    drop(index);
    // The upgrade is persisted: a second open finds the BM25 vectors and changes nothing.
    let again = EdgeIndex::open(data.path(), embedder().dim()).expect("reopens");
    assert_eq!(again.count().await.expect("count"), 3);
    assert_eq!(
        top_source(&again, "E-4471", RetrievalMode::Hybrid).await,
        "a.md"
    );
}

#[tokio::test]
async fn an_index_moves_to_another_index_whole() {
    let e = embedder();
    let from_dir = tempfile::tempdir().expect("data");
    let from = EdgeIndex::open(from_dir.path(), e.dim()).expect("index");
    ragchat::ingest::run(&[rare_terms()], e.as_ref(), &from, 200, 30)
        .await
        .expect("ingest");
    let to_dir = tempfile::tempdir().expect("data");
    let to: Arc<dyn VectorIndex> =
        Arc::new(EdgeIndex::open(to_dir.path(), e.dim()).expect("index"));

    let mut file = Vec::new();
    let exported = ragchat::retrieval::transfer::export(&from, &mut file)
        .await
        .expect("export");
    assert_eq!(exported, from.count().await.expect("count"));
    let imported = ragchat::retrieval::transfer::import(file.as_slice(), to.as_ref())
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
                top_source(&from, question, mode).await,
                top_source(to.as_ref(), question, mode).await,
                "{question} ({mode})"
            );
        }
    }
    let again = ragchat::ingest::run(&[rare_terms()], e.as_ref(), to.as_ref(), 200, 30)
        .await
        .expect("ingest");
    assert_eq!(
        again.indexed, 0,
        "every document is already there, unchanged"
    );

    // A file that is not an export is refused with its line number, and nothing is written.
    let empty_dir = tempfile::tempdir().expect("data");
    let empty = EdgeIndex::open(empty_dir.path(), e.dim()).expect("index");
    let err = ragchat::retrieval::transfer::import(&b"{\"not\":\"a point\"}\n"[..], &empty)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("line 1"), "{err}");
    assert_eq!(empty.count().await.expect("count"), 0);
}
