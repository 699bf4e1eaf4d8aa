//! Ingestion into the real embedded index with real embeddings.

use ragchat::config::{IndexMemory, RetrievalMode};
use ragchat::retrieval::{EdgeIndex, IndexWriter};

use crate::support::embedder;

#[tokio::test]
async fn minilm_matches_the_sentence_transformers_reference() {
    let v = embedder().embed_query("hello world").await.expect("embeds");
    assert_eq!(v.len(), 384);
    // sentence-transformers/all-MiniLM-L6-v2, first five values of "hello world".
    let reference = [-0.03448f32, 0.03102, 0.00674, 0.02611, -0.03936];
    for (got, want) in v.iter().zip(reference) {
        assert!((got - want).abs() < 1e-3, "{:?} vs {reference:?}", &v[..5]);
    }
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);
    // A padded batch gives the same vector as a single embedding.
    let batch = embedder()
        .embed(vec![
            "hello world".into(),
            "a much longer sentence that forces padding of the first".into(),
        ])
        .await
        .expect("embeds");
    let drift: f32 = batch[0]
        .iter()
        .zip(&v)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(drift < 1e-4, "padding changed the vector by {drift}");
}

#[tokio::test]
async fn reingest_skips_unchanged_files_and_replaces_changed_ones() {
    for backend in crate::retrieval::backends() {
        reingest_on(backend.index.as_ref()).await;
    }
}

async fn reingest_on(index: &dyn IndexWriter) {
    let docs = tempfile::tempdir().expect("docs");
    let long = (0..60)
        .map(|i| format!("Paragraph {i} explains the tide tables of harbour number {i}."))
        .collect::<Vec<_>>()
        .join("\n\n");
    std::fs::write(docs.path().join("tides.md"), format!("# Tides\n\n{long}")).expect("write");
    std::fs::write(docs.path().join("ferry.txt"), "The ferry leaves at noon.").expect("write");
    let e = embedder();
    let paths = [docs.path().to_owned()];

    let first = ragchat::ingest::run(&paths, e.as_ref(), index, 64, 8)
        .await
        .expect("ingest");
    assert_eq!((first.indexed, first.unchanged), (2, 0));
    assert!(first.chunks > 3, "the long file is split: {}", first.chunks);
    assert_eq!(first.index_total, first.chunks);

    let again = ragchat::ingest::run(&paths, e.as_ref(), index, 64, 8)
        .await
        .expect("ingest");
    assert_eq!((again.indexed, again.unchanged, again.chunks), (0, 2, 0));
    assert_eq!(again.index_total, first.index_total, "nothing changed");

    // Shrink the long file: its old chunks must all go.
    std::fs::write(
        docs.path().join("tides.md"),
        "# Tides\n\nHigh tide is at six.",
    )
    .expect("write");
    let changed = ragchat::ingest::run(&paths, e.as_ref(), index, 64, 8)
        .await
        .expect("ingest");
    assert_eq!((changed.indexed, changed.unchanged), (1, 1));
    assert_eq!(changed.index_total, 2, "one chunk per file, no orphans");
    let hits = index
        .search(
            crate::support::query(e.as_ref(), "When is high tide?", RetrievalMode::Hybrid).await,
            5,
        )
        .await
        .expect("search");
    assert!(
        hits[0].payload.text.contains("High tide is at six"),
        "{hits:?}"
    );
    assert!(!hits.iter().any(|h| h.payload.text.contains("Paragraph 40")));
}

#[tokio::test]
async fn the_index_survives_a_reopen_and_refuses_another_vector_size() {
    let data = tempfile::tempdir().expect("data");
    let e = embedder();
    {
        let index = EdgeIndex::open(data.path(), e.dim(), IndexMemory::default()).expect("index");
        ragchat::ingest::run(&[crate::support::corpus_dir()], e.as_ref(), &index, 200, 30)
            .await
            .expect("ingest");
    }
    let reopened = EdgeIndex::open(data.path(), e.dim(), IndexMemory::default()).expect("reopens");
    assert_eq!(reopened.count().await.expect("count"), 3);
    drop(reopened);
    // With either placement: a different one must not start moving an index it will refuse.
    for memory in [IndexMemory::Cold, IndexMemory::Cached] {
        let err = EdgeIndex::open(data.path(), 1536, memory)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("384") && err.contains("1536"),
            "{memory:?}: {err}"
        );
        assert!(!data.path().join("ragchat-moving-vectors").exists());
    }
    let reopened = EdgeIndex::open(data.path(), e.dim(), IndexMemory::default()).expect("reopens");
    assert_eq!(reopened.count().await.expect("count"), 3);
}
