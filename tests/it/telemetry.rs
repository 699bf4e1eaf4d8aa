//! Traces and metrics as a user and an operator see them, on the in-process app: the trace id a
//! turn reports (and continues from the caller), the `traceparent` the real llama-server gets,
//! and `/metrics` after real turns, with who may read it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use ragchat::chat::protocol::ServerFrame;
use serde_json::json;

use crate::support::{
    Ws, connect, llm_url, next_frame, send, spawn_app, turn_frames, upgrade_with, wait_record,
};

/// A caller's trace: W3C `traceparent` of a front end that is sampling.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// Forwards every request to the real llama-server and keeps the `traceparent` each carried.
#[derive(Clone)]
struct Recorder {
    upstream: String,
    client: reqwest::Client,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn forward(State(proxy): State<Recorder>, request: Request) -> Response {
    if let Some(tp) = request.headers().get("traceparent") {
        let tp = tp.to_str().unwrap_or_default().to_owned();
        proxy.seen.lock().expect("lock").push(tp);
    }
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let path = path.strip_prefix("/v1").unwrap_or(&path);
    let method = request.method().clone();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .expect("body");
    let mut upstream = proxy
        .client
        .request(method, format!("{}{path}", proxy.upstream));
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name, value);
        }
    }
    let answer = upstream
        .body(body)
        .send()
        .await
        .expect("llama-server answers");
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .expect("response")
}

/// The recording proxy's `/v1` base URL and what it saw.
pub(crate) async fn recording_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    let proxy = Recorder {
        upstream: llm_url(),
        client: reqwest::Client::new(),
        seen: Arc::default(),
    };
    let seen = Arc::clone(&proxy.seen);
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1"), seen)
}

fn is_trace_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0')
}

/// Asks on `ws`; the turn's `done`.
async fn ask(ws: &mut Ws, turn_id: &str) -> ragchat::chat::protocol::Done {
    send(
        ws,
        json!({"type":"ask","question":"Who keeps the Saltmere lighthouse?","turn_id":turn_id}),
    )
    .await;
    match turn_frames(ws).await.pop() {
        Some(ServerFrame::Done(done)) => *done,
        other => panic!("expected done, got {other:?}"),
    }
}

#[tokio::test]
async fn a_turn_continues_the_callers_trace_into_done_the_record_and_the_llm_request() {
    let (proxy, seen) = recording_proxy().await;
    let app = spawn_app(&proxy, &[]).await;

    // A front end that traces: the turn belongs to its trace, end to end.
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let mut ws = upgrade_with(&app, &[("traceparent", &traceparent)])
        .await
        .expect("upgrade");
    assert!(matches!(next_frame(&mut ws).await, ServerFrame::Ready(_)));
    let done = ask(&mut ws, "traced-1").await;
    assert_eq!(done.trace_id.as_deref(), Some(CALLER_TRACE));
    let record = wait_record(&app, "traced-1").await;
    assert_eq!(
        record.trace_id.as_deref(),
        Some(CALLER_TRACE),
        "the record leads to the same trace"
    );
    let sent = seen.lock().expect("lock").clone();
    let to_llm = sent
        .iter()
        .find(|tp| tp.contains(CALLER_TRACE))
        .unwrap_or_else(|| panic!("llama-server got the turn's traceparent: {sent:?}"));
    let parts: Vec<&str> = to_llm.split('-').collect();
    assert_eq!(parts.len(), 4, "{to_llm}");
    assert_ne!(
        parts[2], CALLER_SPAN,
        "the LLM call's parent is the turn's llm.stream span, not the caller's"
    );
    assert_eq!(parts[3], "01", "sampled, as the caller was");

    // No caller trace: each turn starts its own, and says which.
    let mut plain = connect(&app).await;
    let first = ask(&mut plain, "plain-1").await;
    let second = ask(&mut plain, "plain-2").await;
    let (a, b) = (
        first.trace_id.expect("a trace id"),
        second.trace_id.expect("a trace id"),
    );
    assert!(is_trace_id(&a) && is_trace_id(&b), "{a} {b}");
    assert_ne!(a, b, "one trace per turn");
    assert_ne!(a, CALLER_TRACE);
    app.stop().await;
}

/// `GET /metrics` from loopback: status and body.
async fn scrape(url: &str, bearer: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(key) = bearer {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("metrics answer");
    (
        response.status().as_u16(),
        response.text().await.expect("body"),
    )
}

/// The value of the first exposition line that starts with `prefix` and holds every `label`.
fn value(text: &str, prefix: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(prefix) && labels.iter().all(|want| l.contains(want)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn metrics_count_real_turns_and_sockets() {
    let app = spawn_app(&llm_url(), &[]).await;
    let mut ws = connect(&app).await;
    let _ = ask(&mut ws, "m-1").await;
    let _ = ask(&mut ws, "m-2").await;
    let (status, text) = scrape(&app.http("/metrics"), None).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        value(&text, "ragchat_turns_total{", &["outcome=\"completed\""]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(value(&text, "ragchat_sessions_open", &[]), Some(1.0));
    assert_eq!(
        value(
            &text,
            "gen_ai_server_time_to_first_token_seconds_count",
            &[]
        ),
        Some(2.0)
    );
    assert!(
        value(
            &text,
            "gen_ai_server_time_per_output_token_seconds_count",
            &[]
        )
        .is_some_and(|n| n >= 2.0),
        "every token after the first is a gap: {text}"
    );
    assert!(
        value(
            &text,
            "gen_ai_client_token_usage_sum",
            &["gen_ai_token_type=\"output\""]
        )
        .is_some_and(|n| n > 0.0)
    );
    assert_eq!(
        value(&text, "ragchat_component_up", &["component=\"llm\""]),
        Some(1.0)
    );
    assert!(
        value(
            &text,
            "ragchat_retrieve_duration_seconds_bucket",
            &["le=\"0.01\""]
        )
        .is_some_and(|n| n >= 2.0),
        "retrieval on the embedded index resolves below 10 ms: {text}"
    );
    drop(ws);
    // The record path wrote both.
    let _ = wait_record(&app, "m-2").await;
    let (_, text) = scrape(&app.http("/metrics"), None).await;
    assert!(
        value(&text, "ragchat_records_total", &["event=\"written\""]).is_some_and(|n| n >= 2.0),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn metrics_on_the_public_address_need_the_operators_credential() {
    const KEY: &str = "k-operator-0123456789abcdef0123456789";
    let keys = format!("ops={KEY}");
    let app = spawn_app(&llm_url(), &["--auth", "api_key", "--api-keys", &keys]).await;
    let (status, body) = scrape(&app.http("/metrics"), None).await;
    assert_eq!(status, 401, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(body["code"], "unauthorized");
    let (status, body) = scrape(&app.http("/metrics"), Some("wrong-key")).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = scrape(&app.http("/metrics"), Some(KEY)).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE ragchat_sessions_open gauge"),
        "{body}"
    );
    app.stop().await;
}
