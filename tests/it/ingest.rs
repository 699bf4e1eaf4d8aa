//! Ingestion into the real embedded index with real embeddings.

use ragchat::config::{IndexMemory, RetrievalMode};
use ragchat::retrieval::{EdgeIndex, IndexWriter, VectorIndex};

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

#[tokio::test]
async fn prune_removes_deleted_documents_under_its_roots_only_and_sources_lists_them() {
    for backend in crate::retrieval::backends() {
        prune_on(backend.index.as_ref()).await;
    }
}

async fn prune_on(index: &dyn IndexWriter) {
    let root = tempfile::tempdir().expect("root");
    let (handbook, other) = (root.path().join("handbook"), root.path().join("other"));
    for dir in [&handbook, &other] {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(
        handbook.join("leave.md"),
        "# Leave\n\nTwenty-five days a year.",
    )
    .expect("write");
    std::fs::write(
        handbook.join("travel.md"),
        "# Travel\n\nBook trains, not planes.",
    )
    .expect("write");
    std::fs::write(other.join("menu.txt"), "Soup on Fridays.").expect("write");
    let e = embedder();
    let (hb, ot) = ([handbook.clone()], [other.clone()]);
    ragchat::ingest::run(&hb, e.as_ref(), index, 64, 8)
        .await
        .expect("ingest");
    ragchat::ingest::run(&ot, e.as_ref(), index, 64, 8)
        .await
        .expect("ingest");

    let listed = index.sources().await.expect("sources");
    let names: Vec<&str> = listed.iter().map(|d| d.source.as_str()).collect();
    assert_eq!(
        names,
        ["handbook/leave.md", "handbook/travel.md", "other/menu.txt"]
    );
    assert!(listed.iter().all(|d| d.chunks == 1), "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|d| d.ingested_at.as_deref().is_some_and(|t| t.ends_with('Z'))),
        "every document says when it was ingested: {listed:?}"
    );

    // travel.md is deleted: pruning the handbook removes it and nothing else, even though
    // other/ was not named (its files are not "missing", they are elsewhere).
    std::fs::remove_file(handbook.join("travel.md")).expect("rm");
    let removed = ragchat::ingest::prune(&hb, index).await.expect("prune");
    assert_eq!(
        removed
            .iter()
            .map(|d| d.source.as_str())
            .collect::<Vec<_>>(),
        ["handbook/travel.md"]
    );
    let names: Vec<String> = index
        .sources()
        .await
        .expect("sources")
        .into_iter()
        .map(|d| d.source)
        .collect();
    assert_eq!(names, ["handbook/leave.md", "other/menu.txt"]);
    let hits = index
        .search(
            crate::support::query(e.as_ref(), "Book trains, not planes", RetrievalMode::Hybrid)
                .await,
            5,
        )
        .await
        .expect("search");
    assert!(
        hits.iter()
            .all(|h| h.payload.source != "handbook/travel.md"),
        "a pruned document no longer answers: {hits:?}"
    );
    assert!(
        ragchat::ingest::prune(&hb, index)
            .await
            .expect("prune")
            .is_empty(),
        "nothing left to prune"
    );
}

/// `ragchat ARGS…` over the data dir `data`; its exit status, stdout and stderr.
async fn cli(data: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ragchat"))
        .args(args)
        .env("RAGCHAT_DATA_DIR", data)
        .env("RAGCHAT_LOG", "warn")
        .output()
        .await
        .expect("ragchat runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_ingests_pdfs_lists_sources_removes_and_prunes() {
    let data = tempfile::tempdir().expect("data");
    let docs = tempfile::tempdir().expect("docs");
    let pdfs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pdf");
    for f in ["handbook.pdf", "scanned.pdf"] {
        std::fs::copy(pdfs.join(f), docs.path().join(f)).expect("copy");
    }
    std::fs::write(
        docs.path().join("notes.md"),
        "# Notes\n\nThe ferry leaves at noon.",
    )
    .expect("write");
    let root = docs.path().to_str().expect("utf-8 path");

    let (ok, out, err) = cli(data.path(), &["ingest", root]).await;
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).expect("a JSON summary");
    assert_eq!(summary["indexed"], 2, "{summary}");
    let skipped = summary["skipped"].as_array().expect("skipped");
    assert_eq!(skipped.len(), 1, "{summary}");
    assert!(
        skipped[0]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("scanned.pdf"))
    );
    assert!(
        skipped[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no text layer"))
    );

    let (ok, out, _) = cli(data.path(), &["index", "sources"]).await;
    assert!(ok);
    let listed: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    let names: Vec<&str> = listed.iter().filter_map(|d| d["source"].as_str()).collect();
    let dir = docs
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name");
    assert_eq!(
        names,
        [format!("{dir}/handbook.pdf"), format!("{dir}/notes.md")]
    );
    assert!(
        listed[0]["chunks"].as_u64().is_some_and(|n| n >= 3),
        "one per page at least"
    );

    // A PDF's chunks know their page, and a question about page 2 finds it.
    let e = embedder();
    {
        let index = EdgeIndex::open(&data.path().join("index"), e.dim(), IndexMemory::default())
            .expect("the index opens (no other process holds it)");
        let question = "When was the Saltmere lighthouse first lit?";
        let hits = index
            .search(
                crate::support::query(e.as_ref(), question, RetrievalMode::Hybrid).await,
                1,
            )
            .await
            .expect("search");
        assert_eq!(hits[0].payload.page, Some(2), "{hits:?}");
    }

    let (ok, _, err) = cli(
        data.path(),
        &["index", "remove", &format!("{dir}/notes.md"), "nope.md"],
    )
    .await;
    assert!(!ok, "an unknown document is an error");
    assert!(
        err.contains("removed") && err.contains("not in the index") && err.contains("nope.md"),
        "{err}"
    );
    let (_, out, _) = cli(data.path(), &["index", "sources"]).await;
    assert_eq!(out.lines().count(), 1, "{out}");

    std::fs::remove_file(docs.path().join("handbook.pdf")).expect("rm");
    let (ok, out, err) = cli(data.path(), &["ingest", "--prune", root]).await;
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).expect("summary");
    assert_eq!(
        summary["pruned"],
        serde_json::json!([format!("{dir}/handbook.pdf")])
    );
    assert_eq!(
        summary["index_total"], 1,
        "notes.md is back, the handbook gone: {summary}"
    );
}
