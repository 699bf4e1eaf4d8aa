//! Health endpoints, the test page, and the Origin check.

use futures::SinkExt;
use ragchat::chat::protocol::ServerFrame;
use ragchat::error::ErrorCode;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{
    connect, corpus_dir, dead_url, embedder, llm_url, next_frame, query, spawn_app,
};

#[tokio::test]
async fn ready_when_every_backend_answers() {
    let app = spawn_app(&llm_url(), &[]).await;
    let client = reqwest::Client::new();
    let live = client
        .get(app.http("/health/live"))
        .send()
        .await
        .expect("live");
    assert_eq!(live.status(), 200);
    let ready = client
        .get(app.http("/health/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
    let details: serde_json::Value = client
        .get(app.http("/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(details["ready"], true);
    for component in ["index", "embedder", "llm", "store"] {
        assert_eq!(
            details["components"][component]["status"], "up",
            "{details}"
        );
        assert!(details["components"][component]["latency_ms"].is_number());
    }
    assert_eq!(details["version"], ragchat::VERSION);
    app.stop().await;
}

/// `/health` details (this test's client is on loopback and the service needs no
/// authentication, so it may read them).
async fn details(app: &crate::support::TestApp) -> serde_json::Value {
    reqwest::get(app.http("/health"))
        .await
        .expect("health")
        .json()
        .await
        .expect("json body")
}

#[tokio::test]
async fn an_llm_that_is_down_makes_the_replica_unready_and_the_details_say_which() {
    let app = spawn_app(&dead_url(), &[]).await;
    let response = reqwest::get(app.http("/health/ready"))
        .await
        .expect("ready");
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.expect("json body");
    assert_eq!(body["code"], "not_ready");
    let details = details(&app).await;
    let components = &details["components"];
    assert_eq!(components["llm"]["status"], "down", "{details}");
    assert!(components["llm"]["error"].is_string(), "{details}");
    assert_eq!(components["index"]["status"], "up", "{details}");
    app.stop().await;
}

#[tokio::test]
async fn an_unreachable_qdrant_server_means_unready_and_retrieval_unavailable_not_a_hang() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let qdrant = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    // Retrieval fails before the model is asked, so no model is needed either.
    let app = spawn_app(
        &dead_url(),
        &[
            "--index",
            "qdrant",
            "--qdrant-url",
            &qdrant,
            "--qdrant-timeout-ms",
            "500",
            // A replica seeding its index from an unreachable server keeps serving (unready)
            // and retries instead of exiting.
            "--ingest-on-start",
            &corpus_dir().to_string_lossy(),
        ],
    )
    .await;
    let response = reqwest::get(app.http("/health/ready"))
        .await
        .expect("ready");
    assert_eq!(response.status(), 503);
    let details = details(&app).await;
    assert_eq!(
        details["components"]["index"]["status"], "down",
        "{details}"
    );
    assert_ne!(details["seed"], "done", "{details}");

    let mut ws = connect(&app).await;
    let started = std::time::Instant::now();
    ws.send(Message::text(
        serde_json::json!({"type": "ask", "question": "Who keeps the lighthouse?"}).to_string(),
    ))
    .await
    .expect("send");
    match next_frame(&mut ws).await {
        ServerFrame::Error(e) => assert_eq!(e.code, ErrorCode::RetrievalUnavailable, "{e:?}"),
        other => panic!("expected an error frame, got {other:?}"),
    }
    // Retried with back-off (100 + 400 ms) before giving up, and then promptly: not a hang.
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(450),
        "not retried: {took:?}"
    );
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    app.stop().await;
}

#[tokio::test]
async fn the_test_page_is_served() {
    let app = spawn_app(&dead_url(), &[]).await;
    let response = reqwest::get(app.http("/")).await.expect("page");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    let html = response.text().await.expect("body");
    assert!(html.contains(r#"<script src="/app.js">"#), "{html}");
    let script = reqwest::get(app.http("/app.js"))
        .await
        .expect("script")
        .text()
        .await
        .expect("body");
    assert!(script.contains("new WebSocket"), "the page opens a socket");
    app.stop().await;
}

#[tokio::test]
async fn a_foreign_origin_is_refused_with_403() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = spawn_app(&dead_url(), &[]).await;
    let mut request = app.ws_url().into_client_request().expect("request");
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().expect("header"));
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("expected 403, got {other:?}"),
    }
    let mut same = app.ws_url().into_client_request().expect("request");
    let origin = format!("http://{}", app.addr);
    same.headers_mut()
        .insert("origin", origin.parse().expect("header"));
    assert!(
        tokio_tungstenite::connect_async(same).await.is_ok(),
        "own origin allowed"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_seed_ingest_runs_while_the_server_answers_and_readiness_waits_for_it() {
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("eval/corpus/rare-terms");
    let app = spawn_app(&llm_url(), &["--ingest-on-start", &seed.to_string_lossy()]).await;
    // Listening at once (embedding a dozen documents takes far longer than this first probe),
    // but not ready until the seed is in.
    let first = reqwest::get(app.http("/health/ready"))
        .await
        .expect("ready");
    assert_eq!(first.status(), 503);
    let seeding = details(&app).await;
    assert_ne!(seeding["seed"], "done", "{seeding}");

    let started = std::time::Instant::now();
    loop {
        let status = reqwest::get(app.http("/health/ready"))
            .await
            .expect("ready")
            .status();
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "never ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let details: serde_json::Value = reqwest::get(app.http("/health"))
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(details["seed"], "done");
    let hits = app
        .state
        .index
        .search(
            query(
                embedder().as_ref(),
                "What does error E-4471 mean?",
                ragchat::config::RetrievalMode::Hybrid,
            )
            .await,
            3,
        )
        .await
        .expect("search");
    assert!(
        hits[0].payload.source.ends_with("err-e4471.md"),
        "{:?}",
        hits[0].payload.source
    );
    app.stop().await;
}

#[tokio::test]
async fn a_seed_path_that_does_not_exist_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = crate::support::config(
        dir.path(),
        &dead_url(),
        &["--ingest-on-start", "/no/such/corpus"],
    );
    let app = ragchat::app::App::build(config, Default::default())
        .await
        .expect("builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = app
        .serve(listener, std::future::pending())
        .await
        .expect_err("refuses to start");
    assert!(err.to_string().contains("/no/such/corpus"), "{err}");
}
