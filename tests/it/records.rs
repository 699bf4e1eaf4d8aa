//! The record path against real stores: Cosmos DB (the patched `@vercel/cosmosdb-server`,
//! read back with the official Python SDK) and SQLite. Records equal what the client saw,
//! survive 429s, outages and restarts exactly once, conversations continue on another
//! replica, and a misconfigured container is a clear start-up error.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use ragchat::chat::protocol::{Done, FinishReason, ServerFrame};
use ragchat::store::TurnStatus;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::cosmos_server::CosmosServer;
use crate::support::{
    self, connect, llm_url, send, spawn_app, spawn_app_at, turn_frames, wait_record_in,
};

const LIGHTHOUSE: &str = "Who is the keeper of the Zephyr lighthouse on Cape Brannock?";

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn done(frame: &ServerFrame) -> &Done {
    match frame {
        ServerFrame::Done(d) => d,
        other => panic!("expected done, got {other:?}"),
    }
}

/// One non-streaming turn on a fresh socket; its `done`.
async fn ask(app: &support::TestApp, body: serde_json::Value) -> Box<Done> {
    let mut ws = connect(app).await;
    let mut body = body;
    body["type"] = json!("ask");
    body["stream"] = json!(false);
    send(&mut ws, body).await;
    match turn_frames(&mut ws).await.pop() {
        Some(ServerFrame::Done(d)) => d,
        other => panic!("expected done, got {other:?}"),
    }
}

#[tokio::test]
async fn a_turn_is_stored_in_cosmos_as_the_client_saw_it() {
    let cosmos = CosmosServer::start().await;
    let args = cosmos.args("seen");
    let app = spawn_app(&llm_url(), &strs(&args)).await;
    let mut ws = connect(&app).await;
    send(
        &mut ws,
        json!({"type":"ask","question":LIGHTHOUSE,"turn_id":"seen-1",
               "conversation_id":"conv-seen","user":"ada@example.com"}),
    )
    .await;
    let frames = turn_frames(&mut ws).await;
    let ServerFrame::Sources(sources) = &frames[0] else {
        panic!("sources first, got {:?}", frames[0]);
    };
    let done = done(frames.last().expect("frames"));
    assert_eq!(done.history_turns, 0);

    let record = wait_record_in(&app, "conv-seen", "seen-1").await;
    // What the official Python SDK reads back is what Azure tooling will see.
    let doc = cosmos.read_back("seen", "seen-1", "conv-seen").await;
    assert_eq!(doc["id"], "seen-1");
    assert_eq!(doc["conversation_id"], "conv-seen");
    assert_eq!(doc["question"], LIGHTHOUSE);
    assert_eq!(doc["user"], "ada@example.com");
    assert_eq!(doc["answer"], done.answer.as_str());
    assert_eq!(doc["citations"], json!(done.citations));
    assert_eq!(doc["status"], "completed");
    assert_eq!(doc["finish_reason"], json!(done.finish_reason));
    assert_eq!(doc["usage"], json!(done.usage));
    let seen: Vec<_> = sources
        .sources
        .iter()
        .map(|s| json!({"n": s.n, "chunk_id": s.chunk_id, "source": s.source}))
        .collect();
    let stored: Vec<_> = doc["sources"]
        .as_array()
        .expect("sources array")
        .iter()
        .map(|s| json!({"n": s["n"], "chunk_id": s["chunk_id"], "source": s["source"]}))
        .collect();
    assert_eq!(stored, seen);

    // Byte for byte the record JSON every store keeps: the same fields, nothing else but
    // Cosmos's own underscore-prefixed system properties.
    let ours = serde_json::to_value(&record).expect("record json");
    let ours = ours.as_object().expect("object");
    let theirs: serde_json::Map<_, _> = doc
        .as_object()
        .expect("object")
        .iter()
        .filter(|(k, _)| !k.starts_with('_'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(&theirs, ours);
    app.stop().await;
    cosmos.stop().await;
}

#[tokio::test]
async fn throttled_writes_are_retried_and_every_record_arrives_once() {
    let cosmos = CosmosServer::start().await;
    let args = cosmos.args("throttle");
    let app = spawn_app(&llm_url(), &strs(&args)).await;
    cosmos.admin("/stats/reset", json!({})).await;
    // More 429s than the SDK retries by itself (18), so our writer's back-off runs too.
    cosmos
        .admin(
            "/fault/throttle",
            json!({"count": 25, "retry_after_ms": 20, "writes_only": true}),
        )
        .await;
    for i in 0..3 {
        let done = ask(
            &app,
            json!({"question":LIGHTHOUSE,"turn_id":format!("t{i}"),"conversation_id":"conv-t",
                   "history":[{"role":"user","content":"hello"}]}),
        )
        .await;
        assert_eq!(done.turn_id, format!("t{i}"));
    }
    for i in 0..3 {
        wait_record_in(&app, "conv-t", &format!("t{i}")).await;
    }
    assert_eq!(cosmos.ids("throttle").await, ["t0", "t1", "t2"]);
    let stats = cosmos.stats().await;
    assert_eq!(stats["throttled"], 25, "the 429s were served to writes");
    assert_eq!(stats["doc_writes"], 3, "each record written exactly once");
    let h = health(&app).await;
    assert!(
        h["records"]["retried"].as_u64() > Some(0),
        "the writer retried: {h}"
    );
    assert_eq!(h["records"]["spooled"], 0);
    app.stop().await;
    cosmos.stop().await;
}

async fn health(app: &support::TestApp) -> serde_json::Value {
    reqwest::get(app.http("/health"))
        .await
        .expect("health")
        .json()
        .await
        .expect("json")
}

/// Asks `n` questions at once on `n` sockets (ids `{prefix}{i}`); every one must get `done`.
async fn ask_many(app: &support::TestApp, prefix: &str, n: usize) {
    let turns = (0..n).map(|i| {
        ask(
            app,
            json!({"question": LIGHTHOUSE, "turn_id": format!("{prefix}{i:02}"),
                   "conversation_id": format!("conv-{prefix}{}", i % 5)}),
        )
    });
    let dones = futures::future::join_all(turns).await;
    assert_eq!(dones.len(), n);
    for d in dones {
        assert!(!d.answer.is_empty(), "{} got an answer", d.turn_id);
    }
}

async fn wait_until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..600 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn a_cosmos_outage_spools_records_and_replays_them_exactly_once() {
    let cosmos = CosmosServer::start().await;
    let data = tempfile::tempdir().expect("tempdir");
    let mut args = cosmos.args("outage");
    // 50 turns share one small llama-server with the other tests: short prompts and answers,
    // and patience for the queue.
    args.extend(
        [
            "--record-retry-secs",
            "1",
            "--store-timeout-ms",
            "2000",
            "--top-k",
            "1",
            "--llm-max-tokens",
            "8",
            "--llm-stall-timeout-secs",
            "300",
        ]
        .map(String::from),
    );
    let app = spawn_app_at(data.path(), &llm_url(), &strs(&args)).await;

    // The store goes away while 25 turns run: every client still gets its answer, the records
    // go to the spool, the service stays ready and says it is degraded.
    cosmos.admin("/outage/start", json!({})).await;
    ask_many(&app, "a", 25).await;
    wait_until("25 records are spooled", async || {
        health(&app).await["records"]["spooled"] == 25
    })
    .await;
    let h = health(&app).await;
    assert_eq!(h["records"]["state"], "degraded");
    assert!(h["records"]["last_error"].is_string());
    let ready = reqwest::get(app.http("/health/ready"))
        .await
        .expect("ready");
    assert_eq!(
        ready.status(),
        200,
        "a store outage does not take the replica out"
    );

    // It comes back: the spool replays by itself.
    cosmos.admin("/outage/end", json!({})).await;
    wait_until("the spool is replayed", async || {
        health(&app).await["records"]["spooled"] == 0
    })
    .await;
    assert_eq!(cosmos.ids("outage").await.len(), 25);

    // Down again for 25 more turns, then the process restarts before the store is back: the
    // spool on disk is replayed at start-up.
    cosmos.admin("/outage/start", json!({})).await;
    ask_many(&app, "b", 25).await;
    app.stop().await;
    cosmos.admin("/outage/end", json!({})).await;
    let app = spawn_app_at(data.path(), &llm_url(), &strs(&args)).await;
    wait_until("the spool is replayed after the restart", async || {
        health(&app).await["records"]["spooled"] == 0
    })
    .await;
    let ids = cosmos.ids("outage").await;
    let unique: BTreeSet<_> = ids.iter().collect();
    assert_eq!(ids.len(), 50, "exactly 50 documents: {ids:?}");
    assert_eq!(unique.len(), 50, "no duplicates");
    assert_eq!(health(&app).await["records"]["state"], "ok");
    app.stop().await;
    cosmos.stop().await;
}

#[tokio::test]
async fn a_replica_starts_while_cosmos_is_down_and_catches_up_when_it_answers() {
    let cosmos = CosmosServer::start().await;
    cosmos.admin("/outage/start", json!({})).await;
    let mut args = cosmos.args("late");
    args.extend(["--record-retry-secs", "1"].map(String::from));
    let app = spawn_app(&llm_url(), &strs(&args)).await;
    let ready = reqwest::get(app.http("/health/ready"))
        .await
        .expect("ready");
    assert_eq!(
        ready.status(),
        200,
        "an unreachable store does not make it unready"
    );
    let done = ask(
        &app,
        json!({"question": LIGHTHOUSE, "turn_id": "late-1", "conversation_id": "conv-late"}),
    )
    .await;
    assert!(!done.answer.is_empty());
    wait_until("the record is spooled", async || {
        health(&app).await["records"]["spooled"] == 1
    })
    .await;
    cosmos.admin("/outage/end", json!({})).await;
    // First contact creates the database and container, then the spool replays.
    wait_until("the spool is replayed", async || {
        health(&app).await["records"]["spooled"] == 0
    })
    .await;
    assert_eq!(cosmos.ids("late").await, ["late-1"]);
    app.stop().await;
    cosmos.stop().await;
}

#[tokio::test]
async fn a_conversation_continues_on_another_replica_sharing_the_store() {
    let cosmos = CosmosServer::start().await;
    let args = cosmos.args("replicas");
    let first = spawn_app(&llm_url(), &strs(&args)).await;
    let second = spawn_app(&llm_url(), &strs(&args)).await;

    let done = ask(
        &first,
        json!({"question": LIGHTHOUSE, "turn_id": "r1", "conversation_id": "conv-r"}),
    )
    .await;
    assert_eq!(done.history_turns, 0);
    wait_record_in(&first, "conv-r", "r1").await;

    // Only the conversation id: the second replica loads the first turn from the store.
    let done = ask(
        &second,
        json!({"question": "When was it built?", "turn_id": "r2", "conversation_id": "conv-r"}),
    )
    .await;
    assert_eq!(done.history_turns, 1, "the earlier turn was in the prompt");
    let record = wait_record_in(&second, "conv-r", "r2").await;
    assert!(
        record.usage.prompt_tokens > Some(0),
        "prompt tokens are reported"
    );

    // Client-sent history still wins when given.
    let done = ask(
        &second,
        json!({"question": "And its height?", "conversation_id": "conv-r",
               "history": [{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},
                           {"role":"user","content":"more"},{"role":"assistant","content":"ok"}]}),
    )
    .await;
    assert_eq!(done.history_turns, 2);
    first.stop().await;
    second.stop().await;
    cosmos.stop().await;
}

#[tokio::test]
async fn a_conversation_continues_from_sqlite_on_a_new_socket() {
    let app = spawn_app(&llm_url(), &[]).await;
    ask(
        &app,
        json!({"question": LIGHTHOUSE, "turn_id": "s1", "conversation_id": "conv-s"}),
    )
    .await;
    wait_record_in(&app, "conv-s", "s1").await;
    let done = ask(
        &app,
        json!({"question": "When was it built?", "conversation_id": "conv-s"}),
    )
    .await;
    assert_eq!(done.history_turns, 1);
    // A conversation nobody knows starts empty.
    let done = ask(
        &app,
        json!({"question": LIGHTHOUSE, "conversation_id": "conv-unknown"}),
    )
    .await;
    assert_eq!(done.history_turns, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_misconfigured_container_is_a_clear_start_up_error() {
    let cosmos = CosmosServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");

    // Missing container, and creating it is not allowed.
    let mut args = cosmos.args("misconfigured");
    args.retain(|a| a != "--cosmos-create" && a != "true");
    let config = support::config(dir.path(), &llm_url(), &strs(&args));
    let err = ragchat::app::open_store(&config)
        .await
        .err()
        .expect("a missing container is refused")
        .to_string();
    assert!(err.contains("turns"), "{err}");
    assert!(
        err.contains("RAGCHAT_COSMOS_CREATE"),
        "says how to fix it: {err}"
    );

    // A container partitioned by the wrong path.
    tokio::time::timeout(
        Duration::from_secs(30),
        cosmos.create_container("misconfigured", "turns", "/id"),
    )
    .await
    .expect("no hang");
    let err = ragchat::app::open_store(&config)
        .await
        .err()
        .expect("the wrong partition key is refused")
        .to_string();
    assert!(
        err.contains("/conversation_id") && err.contains("/id"),
        "names both paths: {err}"
    );
    cosmos.stop().await;
}

/// Reads the server's JSON log until its `serving` line and returns the address; keeps draining
/// the log (echoed to our stderr) so the server never blocks on a full pipe.
/// `ragchat ingest` of the fixture corpus with `args`, as a separate process.
pub async fn ingest_corpus(args: &[String]) {
    let ingest = tokio::process::Command::new(env!("CARGO_BIN_EXE_ragchat"))
        .arg("ingest")
        .arg(support::corpus_dir())
        .args(args)
        .output()
        .await
        .expect("ingest runs");
    assert!(
        ingest.status.success(),
        "{}",
        String::from_utf8_lossy(&ingest.stderr)
    );
}

/// `ragchat serve` with `args` on a free port (port 0: the server picks one and logs it, so no
/// race with other tests for a port); the process and its address once it is ready.
pub async fn serve_binary(args: &[String]) -> (tokio::process::Child, String) {
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_ragchat"))
        .arg("serve")
        .args(args)
        .args(["--addr", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let addr = serving_addr(server.stderr.take().expect("stderr")).await;
    wait_until("the server is ready", async || {
        reqwest::get(format!("http://{addr}/health/ready"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    (server, addr)
}

async fn serving_addr(stderr: tokio::process::ChildStderr) -> String {
    use tokio::io::AsyncBufReadExt;
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("{line}");
            if let Some(tx) = tx.take_if(|_| line.contains("\"serving\""))
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            {
                let addr = v["addr"].as_str().unwrap_or_default().to_owned();
                let _ = tx.send(addr);
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(120), rx)
        .await
        .expect("the server logs `serving` within 120 s")
        .expect("log reader")
}

/// The real binary, SIGTERM with 20 streams in flight: every client gets `done` (completed, or
/// cancelled past the grace period) then close 1012, the process exits 0, and every record is
/// in the store.
#[tokio::test]
async fn sigterm_with_twenty_streams_loses_no_turn() {
    let cosmos = CosmosServer::start().await;
    let data = tempfile::tempdir().expect("tempdir");
    let mut args = cosmos.args("sigterm");
    args.extend([
        "--data-dir".into(),
        data.path().display().to_string(),
        "--llm-url".into(),
        llm_url(),
        // Short answers and a long grace: with every test sharing two cores and llama-server's
        // two slots, 48 tokens did not fit in a 3 s grace on CI and every turn was cancelled.
        "--llm-max-tokens".into(),
        "16".into(),
        "--shutdown-grace-secs".into(),
        "10".into(),
        "--top-k".into(),
        "1".into(),
        "--llm-stall-timeout-secs".into(),
        "300".into(),
        "--log-format".into(),
        "json".into(),
        "--turns-per-minute".into(),
        "0".into(),
    ]);
    ingest_corpus(&args).await;
    let (mut server, addr) = serve_binary(&args).await;

    let mut sockets = Vec::new();
    for i in 0..20 {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .expect("connect");
        let _ready = ws.next().await;
        send(
            &mut ws,
            json!({"type":"ask","question":LIGHTHOUSE,"turn_id":format!("k{i:02}"),
                   "conversation_id":"conv-k"}),
        )
        .await;
        sockets.push(ws);
    }
    // Let the first answers start streaming, then ask the process to stop.
    let first = &mut sockets[0];
    loop {
        match first.next().await {
            Some(Ok(Message::Text(t))) if t.contains("\"token\"") => break,
            Some(Ok(_)) => continue,
            other => panic!("socket ended early: {other:?}"),
        }
    }
    let pid = server.id().expect("pid").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(kill.success());
    let killed = std::time::Instant::now();

    // Every socket read at once, so each `done` is timed when it arrives.
    let ends = futures::future::join_all(sockets.iter_mut().map(|ws| async move {
        let mut done = None;
        loop {
            let message = tokio::time::timeout(Duration::from_secs(60), ws.next())
                .await
                .expect("the server closes within 60 s");
            match message {
                Some(Ok(Message::Text(t))) => {
                    if let Ok(ServerFrame::Done(d)) = serde_json::from_str(&t) {
                        done = Some((d.finish_reason, killed.elapsed()));
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let close = frame.map(|f| u16::from(f.code));
                    return (done.expect("every client got done"), close);
                }
                Some(Ok(_)) => {}
                other => panic!("socket ended without a close frame: {other:?}"),
            }
        }
    }))
    .await;
    let mut finish = Vec::new();
    for ((reason, after), close) in ends {
        assert_eq!(close, Some(1012), "close frame 'service restart'");
        // The grace period is 10 s: no turn is cancelled before it is over.
        if reason == FinishReason::Cancelled {
            assert!(
                after >= Duration::from_millis(9900),
                "cancelled {after:?} after SIGTERM"
            );
        }
        finish.push(reason);
    }
    assert!(
        finish.iter().any(|r| *r != FinishReason::Cancelled),
        "running turns finish within the grace period: {finish:?}"
    );
    let status = tokio::time::timeout(Duration::from_secs(60), server.wait())
        .await
        .expect("the process exits")
        .expect("wait");
    assert!(status.success(), "exit 0 after a drain, got {status:?}");

    let ids = cosmos.ids("sigterm").await;
    assert_eq!(ids.len(), 20, "all 20 records: {ids:?}");
    let mut statuses = Vec::new();
    for i in 0..20 {
        let doc = cosmos
            .read_back("sigterm", &format!("k{i:02}"), "conv-k")
            .await;
        statuses.push(doc["status"].as_str().unwrap_or_default().to_owned());
    }
    for (reason, status) in finish.iter().zip(&statuses) {
        let expected = if *reason == FinishReason::Cancelled {
            TurnStatus::Cancelled
        } else {
            TurnStatus::Completed
        };
        assert_eq!(json!(expected), json!(status), "record status matches done");
    }
    cosmos.stop().await;
}

/// `value` with every number as a double, as JavaScript and Cosmos DB see numbers.
fn as_doubles(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Value::Array(items) => Value::Array(items.into_iter().map(as_doubles).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, as_doubles(v))).collect())
        }
        other => other,
    }
}

/// The records of each status as the version before the typed record stored them.
fn stored_fixtures() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/records");
    ["completed", "cancelled", "failed"]
        .into_iter()
        .map(|status| {
            let json =
                std::fs::read_to_string(dir.join(format!("{status}.json"))).expect("fixture");
            (status.to_owned(), json.trim_end().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn sqlite_keeps_the_record_json_of_every_status_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = support::config(dir.path(), &support::dead_url(), &[]);
    let store = ragchat::app::open_store(&config).await.expect("store");
    for (status, json) in stored_fixtures() {
        let record: ragchat::store::TurnRecord = serde_json::from_str(&json).expect(&status);
        store.put(&record).await.expect("put");
        let db = rusqlite::Connection::open(dir.path().join("records.sqlite")).expect("db");
        let stored: String = db
            .query_row(
                "SELECT record FROM turns WHERE id = ?1",
                [&record.id],
                |r| r.get(0),
            )
            .expect("row");
        assert_eq!(stored, json, "{status}: the stored JSON is unchanged");
        let back = support::find_record(store.as_ref(), &record.conversation_id, &record.id).await;
        assert_eq!(back.as_ref(), Some(&record), "{status}: reads back");
    }
}

#[tokio::test]
async fn cosmos_keeps_the_record_json_of_every_status() {
    let cosmos = CosmosServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let args = cosmos.args("golden");
    let config = support::config(dir.path(), &support::dead_url(), &strs(&args));
    let store = ragchat::app::open_store(&config).await.expect("store");
    for (status, json) in stored_fixtures() {
        let record: ragchat::store::TurnRecord = serde_json::from_str(&json).expect(&status);
        store.put(&record).await.expect("put");
        // What Azure tooling reads (the official Python SDK) is the fixture, field for field,
        // beside Cosmos's own underscore-prefixed system properties.
        let doc = cosmos
            .read_back("golden", &record.id, &record.conversation_id)
            .await;
        let theirs: serde_json::Map<_, _> = doc
            .as_object()
            .expect("object")
            .iter()
            .filter(|(k, _)| !k.starts_with('_'))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let ours: serde_json::Value = serde_json::from_str(&json).expect("json");
        // JavaScript (the test server) and Cosmos DB keep numbers as doubles: 980.0 reads back
        // as 980. Numbers compare as numbers.
        assert_eq!(
            as_doubles(serde_json::Value::Object(theirs)),
            as_doubles(ours),
            "{status}"
        );
        let back = support::find_record(store.as_ref(), &record.conversation_id, &record.id).await;
        assert_eq!(
            back.as_ref(),
            Some(&record),
            "{status}: reads back through the SDK"
        );
    }
    cosmos.stop().await;
}

/// Rates `turn_id` on `ws`; the frame that answers it.
async fn rate(ws: &mut crate::support::Ws, feedback: serde_json::Value) -> ServerFrame {
    send(ws, feedback).await;
    crate::support::next_frame(ws).await
}

#[tokio::test]
async fn feedback_updates_the_turns_cosmos_document_and_survives_a_reconnect() {
    let cosmos = CosmosServer::start().await;
    let args = cosmos.args("rated");
    let app = spawn_app(&llm_url(), &strs(&args)).await;
    let mut ws = connect(&app).await;
    send(
        &mut ws,
        json!({"type":"ask","question":LIGHTHOUSE,"turn_id":"rated-1","conversation_id":"conv-rated"}),
    )
    .await;
    let frames = turn_frames(&mut ws).await;
    let done = done(frames.last().expect("frames"));
    let saved = rate(
        &mut ws,
        json!({"type":"feedback","turn_id":"rated-1","rating":"up"}),
    )
    .await;
    assert!(matches!(saved, ServerFrame::FeedbackSaved(_)), "{saved:?}");
    drop(ws);

    // A new socket (a reload, another replica): the turn is found in the store by its
    // conversation, and the rating replaced.
    wait_record_in(&app, "conv-rated", "rated-1").await;
    let mut ws = connect(&app).await;
    let saved = rate(
        &mut ws,
        json!({"type":"feedback","turn_id":"rated-1","conversation_id":"conv-rated",
               "rating":"down","comment":"Mara is not the keeper."}),
    )
    .await;
    assert!(matches!(saved, ServerFrame::FeedbackSaved(_)), "{saved:?}");
    // A turn that was never asked, in that conversation: refused, naming no turn.
    let refused = rate(
        &mut ws,
        json!({"type":"feedback","turn_id":"never-asked","conversation_id":"conv-rated","rating":"up"}),
    )
    .await;
    let ServerFrame::Error(e) = refused else {
        panic!("expected an error, got {refused:?}");
    };
    assert_eq!(e.code, ragchat::error::ErrorCode::BadRequest);
    assert_eq!(e.feedback_for.as_deref(), Some("never-asked"));
    assert_eq!(e.turn_id, None);

    let mut doc = serde_json::Value::Null;
    for _ in 0..100 {
        doc = cosmos.read_back("rated", "rated-1", "conv-rated").await;
        if doc["feedback"]["rating"] == "down" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(doc["feedback"]["rating"], "down", "{doc}");
    assert_eq!(doc["feedback"]["comment"], "Mara is not the keeper.");
    assert_eq!(
        doc["answer"],
        done.answer.as_str(),
        "the rest of the turn is kept"
    );
    assert_eq!(
        cosmos.ids("rated").await,
        ["rated-1"],
        "one document per turn, updated in place"
    );
    app.stop().await;
    cosmos.stop().await;
}
