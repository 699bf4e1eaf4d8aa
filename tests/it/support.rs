//! Spawning the app, talking to it over a real WebSocket, and a replay server for recorded
//! llama-server transcripts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::Parser;
use futures::{SinkExt, StreamExt};
use ragchat::app::{App, Backends};
use ragchat::chat::protocol::ServerFrame;
use ragchat::config::{Config, ConfigArgs, IndexBackend};
use ragchat::embed::{Embedder, LocalEmbedder};
use ragchat::retrieval::{EdgeIndex, IndexTransfer};
use ragchat::state::AppState;
use ragchat::store::{RecordStore, TurnRecord};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a socket runs over: plain TCP, or TLS to a proxy in front (tests/it/proxy.rs).
pub trait Transport: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Transport for T {}

#[derive(Parser)]
#[command(args_override_self = true)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

/// The llama-server that scripts/test.sh started.
pub fn llm_url() -> String {
    std::env::var("RAGCHAT_TEST_LLM_URL").expect(
        "RAGCHAT_TEST_LLM_URL is not set: run the tests with `make test`, which starts a real \
         llama-server and sets it",
    )
}

/// Tells whoever runs the tests something they must not miss (a skipped half, say): a line in
/// the file `make test` prints after the tests (`RAGCHAT_TEST_NOTICES`), else stderr.
pub fn notice(line: &str) {
    use std::io::Write;
    let written = std::env::var_os("RAGCHAT_TEST_NOTICES").is_some_and(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{line}"))
            .is_ok()
    });
    if !written {
        eprintln!("{line}");
    }
}

/// A URL where nothing listens.
pub fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}/v1")
}

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus")
}

/// A validated config for a test: temp data dir, the given LLM, small answers, plus `extra`
/// flags.
pub fn config(data_dir: &Path, llm_url: &str, extra: &[&str]) -> Config {
    let mut argv: Vec<String> = vec![
        "ragchat".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--llm-url".into(),
        llm_url.into(),
        "--llm-max-tokens".into(),
        "48".into(),
        "--llm-temperature".into(),
        "0".into(),
        "--top-k".into(),
        "3".into(),
        // One small llama-server serves every test on 2 cores: a queued request may wait long
        // for its first token. Tests about stalls set their own, shorter timeout.
        "--llm-stall-timeout-secs".into(),
        "300".into(),
        "--log-format".into(),
        "pretty".into(),
        // The suite asks many questions from one address: the limits have their own tests.
        "--turns-per-minute".into(),
        "0".into(),
        "--daily-tokens".into(),
        "0".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    Args::try_parse_from(argv)
        .expect("test config parses")
        .config
        .validate()
        .expect("test config is valid")
}

/// MiniLM, loaded once for the whole test binary.
pub fn embedder() -> Arc<dyn Embedder> {
    static EMBEDDER: OnceLock<Arc<dyn Embedder>> = OnceLock::new();
    EMBEDDER
        .get_or_init(|| {
            let dir = std::env::var_os("RAGCHAT_EMBED_MODEL_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                        .join(".cache/ragchat/models/all-MiniLM-L6-v2")
                });
            Arc::new(LocalEmbedder::load(&dir).expect("MiniLM loads (run scripts/assets.sh)"))
        })
        .clone()
}

/// A search for `text` (embedded with `embedder`) in `mode`.
pub async fn query(
    embedder: &dyn Embedder,
    text: &str,
    mode: ragchat::config::RetrievalMode,
) -> ragchat::retrieval::Query {
    ragchat::retrieval::Query {
        text: text.to_owned(),
        vector: embedder.embed_query(text).await.expect("embeds"),
        mode,
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub state: AppState,
    /// Holds the data dir alive for the app's lifetime (none when the test owns it).
    _dir: Option<tempfile::TempDir>,
    /// The server collection the app uses (`RAGCHAT_TEST_INDEX=qdrant`), dropped with it.
    _index: Option<crate::retrieval::Backend>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Triggers graceful shutdown and waits for the server (and its record writer) to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(60), server)
                .await
                .expect("server stops in time")
                .expect("server task")
                .expect("server ran cleanly");
        }
    }
}

/// Spawns the app on 127.0.0.1:0 with the fixture corpus ingested.
pub async fn spawn_app(llm_url: &str, extra: &[&str]) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut app = spawn_app_at(dir.path(), llm_url, extra).await;
    app._dir = Some(dir);
    app
}

/// Spawns the app on 127.0.0.1:0 over the data dir `dir` (kept across restarts), with the
/// fixture corpus ingested and the store that `extra` names.
pub async fn spawn_app_at(dir: &Path, llm_url: &str, extra: &[&str]) -> TestApp {
    // Turns get trace ids as in the binary (no log output, no export).
    static TRACES: std::sync::Once = std::sync::Once::new();
    TRACES.call_once(ragchat::telemetry::init_traces_only);
    let config = config(dir, llm_url, extra);
    let embedder = embedder();
    // `RAGCHAT_TEST_INDEX=qdrant` (with RAGCHAT_TEST_QDRANT_URL) runs every app test on a fresh
    // collection of the Qdrant server instead of the embedded index.
    let on_server = std::env::var("RAGCHAT_TEST_INDEX").is_ok_and(|v| v == "qdrant")
        && matches!(config.index.backend, IndexBackend::Edge(_));
    let mut guard = None;
    let index: Arc<dyn IndexTransfer> = match &config.index.backend {
        IndexBackend::Edge(_) if on_server => {
            let backend = crate::retrieval::qdrant_backend()
                .expect("RAGCHAT_TEST_INDEX=qdrant needs RAGCHAT_TEST_QDRANT_URL");
            ragchat::ingest::run(
                &[corpus_dir()],
                embedder.as_ref(),
                backend.index.as_ref(),
                200,
                30,
            )
            .await
            .expect("corpus ingests");
            let index = Arc::clone(&backend.index);
            guard = Some(backend);
            index
        }
        IndexBackend::Edge(edge) => {
            let index = EdgeIndex::open(&edge.dir, embedder.dim(), edge.memory).expect("index");
            ragchat::ingest::run(&[corpus_dir()], embedder.as_ref(), &index, 200, 30)
                .await
                .expect("corpus ingests");
            Arc::new(index)
        }
        // As `serve` opens it (the tests that use a server index bring their own data).
        IndexBackend::Qdrant(_) => ragchat::app::open_index(&config, embedder.dim())
            .await
            .expect("index opens"),
    };
    let backends = Backends {
        embedder,
        index,
        llm: ragchat::app::open_llm(&config).expect("llm client"),
        store: ragchat::app::open_store(&config)
            .await
            .expect("store opens"),
    };
    let app = App::with_backends(config, backends).expect("app assembles");
    let state = app.state.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, async move {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        state,
        _dir: None,
        _index: guard,
        stop: Some(stop),
        server: Some(server),
    }
}

/// Opens a socket and reads its `ready` frame.
pub async fn connect(app: &TestApp) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(app.ws_url())
        .await
        .expect("websocket connects");
    match next_frame(&mut ws).await {
        ServerFrame::Ready(_) => ws,
        other => panic!("expected ready, got {other:?}"),
    }
}

/// Opens a socket with extra upgrade headers; the upgrade's error (e.g. an HTTP 401) if refused.
pub async fn upgrade_with(
    app: &TestApp,
    headers: &[(&str, &str)],
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = app.ws_url().into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            value.parse().expect("header value"),
        );
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

/// The HTTP status and JSON body of a refused upgrade.
pub fn refused(error: tokio_tungstenite::tungstenite::Error) -> (u16, serde_json::Value) {
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(serde_json::Value::Null);
            (status, body)
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// Reads until the close frame (text frames are collected); its code and reason.
pub async fn close_of<S: Transport>(
    ws: &mut WebSocketStream<S>,
) -> (u16, String, Vec<ServerFrame>) {
    let mut frames = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("the server acts within 30 s");
        match message {
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                return (code, reason, frames);
            }
            Some(Ok(Message::Text(text))) => {
                frames.push(serde_json::from_str(&text).expect("a frame"));
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

pub async fn send<S: Transport>(ws: &mut WebSocketStream<S>, json: serde_json::Value) {
    ws.send(Message::text(json.to_string()))
        .await
        .expect("send");
}

/// The next JSON frame (pings skipped), within 120 s.
pub async fn next_frame<S: Transport>(ws: &mut WebSocketStream<S>) -> ServerFrame {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(120), ws.next())
            .await
            .expect("a frame within 120 s")
            .expect("socket open")
            .expect("frame ok");
        match message {
            Message::Text(text) => {
                return serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("unparsable frame {text}: {e}"));
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Every frame of one turn, up to and including its `done` or `error`.
pub async fn turn_frames<S: Transport>(ws: &mut WebSocketStream<S>) -> Vec<ServerFrame> {
    let mut frames = Vec::new();
    loop {
        let frame = next_frame(ws).await;
        let end = matches!(frame, ServerFrame::Done(_) | ServerFrame::Error(_));
        frames.push(frame);
        if end {
            return frames;
        }
    }
}

/// The record of `turn_id` in `conversation_id`, if the store has it: what a test reads back
/// (the service itself never reads a single record).
pub async fn find_record(
    store: &dyn RecordStore,
    conversation_id: &str,
    turn_id: &str,
) -> Option<TurnRecord> {
    store
        .conversation(conversation_id, 10_000)
        .await
        .expect("store readable")
        .into_iter()
        .find(|r| r.id == turn_id)
}

/// Waits (up to `limit`) for the record of `turn_id`, in whichever conversation, to reach the
/// store. SQLite only: it lists across conversations.
pub async fn wait_record_for(app: &TestApp, turn_id: &str, limit: Duration) -> TurnRecord {
    let listing = app
        .state
        .store
        .listing()
        .expect("a store that lists across conversations (SQLite)");
    let started = std::time::Instant::now();
    loop {
        let records = listing.recent(200).await.expect("store readable");
        if let Some(r) = records.into_iter().find(|r| r.id == turn_id) {
            return r;
        }
        assert!(started.elapsed() < limit, "record {turn_id} never arrived");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits for the record of `turn_id` (in whichever conversation) to reach the store.
pub async fn wait_record(app: &TestApp, turn_id: &str) -> TurnRecord {
    wait_record_for(app, turn_id, Duration::from_secs(10)).await
}

/// Waits for the record of `turn_id` in `conversation_id` to reach the store.
pub async fn wait_record_in(app: &TestApp, conversation_id: &str, turn_id: &str) -> TurnRecord {
    for _ in 0..400 {
        if let Some(record) = find_record(app.state.store.as_ref(), conversation_id, turn_id).await
        {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("record {turn_id} never arrived");
}

/// Tokens of the replay server's `long` answer, and the text of each: ~15 MB of token frames,
/// more than the kernel buffers of a loopback socket hold.
pub const LONG_ANSWER_TOKENS: usize = 60_000;
pub const LONG_ANSWER_PIECE: &str = " lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris";

/// The replay server: where it listens, and what it saw.
pub struct Replay {
    pub addr: SocketAddr,
    endless_dropped: Arc<std::sync::atomic::AtomicUsize>,
}

impl Replay {
    /// How many `endless` answers the client dropped (connection closed) while streaming.
    pub fn endless_dropped(&self) -> usize {
        self.endless_dropped
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Serves recorded llama-server transcripts (and faults derived from them) at
/// `http://addr/{scenario}/v1/chat/completions`.
pub async fn replay_server() -> SocketAddr {
    replay().await.addr
}

/// Counts, when dropped, into its counter: an answer body the client let go of.
struct CountDrop(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for CountDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The replay server, with what it saw.
pub async fn replay() -> Replay {
    use axum::extract::Path as UrlPath;
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};

    fn fixture(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/llama-server")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
    /// The JSON body of an error transcript (its first line; the second is the status).
    fn error_body(name: &str) -> String {
        fixture(name).lines().next().unwrap_or_default().to_owned()
    }
    fn sse(body: String) -> Response {
        ([("content-type", "text/event-stream")], body).into_response()
    }
    /// An event stream sent piece by piece, as `body` yields them.
    fn sse_stream(
        body: impl futures::Stream<Item = Result<String, std::io::Error>> + Send + 'static,
    ) -> Response {
        (
            [("content-type", "text/event-stream")],
            axum::body::Body::from_stream(body),
        )
            .into_response()
    }
    fn json(status: u16, body: String) -> Response {
        (
            axum::http::StatusCode::from_u16(status).expect("status"),
            [("content-type", "application/json")],
            body,
        )
            .into_response()
    }
    fn first_chunks(n: usize) -> String {
        fixture("stream-basic.sse")
            .split("\n\n")
            .take(n)
            .map(|e| format!("{e}\n\n"))
            .collect()
    }

    async fn chat(
        axum::extract::State(dropped): axum::extract::State<Arc<std::sync::atomic::AtomicUsize>>,
        UrlPath(scenario): UrlPath<String>,
    ) -> Response {
        match scenario.as_str() {
            // The basic answer's content chunks, one every 100 ms, forever; the body notes when
            // it is dropped (the client closed the connection).
            "endless" => {
                let basic = fixture("stream-basic.sse");
                let chunks: Vec<String> = basic
                    .split("\n\n")
                    .filter(|e| e.contains("\"content\":\""))
                    .map(|e| format!("{e}\n\n"))
                    .collect();
                let guard = CountDrop(dropped);
                let body = futures::stream::iter(chunks.into_iter().cycle()).then(move |chunk| {
                    let _alive = &guard;
                    async move {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, std::io::Error>(chunk)
                    }
                });
                sse_stream(body)
            }
            "basic" => sse(fixture("stream-basic.sse")),
            "usage-length" => sse(fixture("stream-usage-length.sse")),
            // Older builds put usage on the finish chunk.
            "usage-on-finish" => sse(fixture("stream-basic.sse").replace(
                r#""timings":{"#,
                r#""usage":{"completion_tokens":8,"prompt_tokens":49,"total_tokens":57},"timings":{"#,
            )),
            "bad-request" => json(400, error_body("error-bad-request.txt")),
            "overflow" => json(400, error_body("error-context-overflow.txt")),
            "rate-limited" => {
                let mut r = json(
                    429,
                    r#"{"error":{"code":429,"message":"too many requests","type":"rate_limit_error"}}"#
                        .into(),
                );
                r.headers_mut()
                    .insert("retry-after-ms", "1500".parse().expect("header"));
                r
            }
            "unavailable" => json(503, error_body("health-startup.txt").replace(" HTTP 503", "")),
            // OpenAI's answer to a wrong key (its documented error object), quoting the key.
            "unauthorized" => json(
                401,
                r#"{"error":{"message":"Incorrect API key provided: sk-abc123*****wxyz. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#
                    .into(),
            ),
            // llama-server's answer when every slot is taken (tools/server/server-context.cpp:
            // format_error_response("no slot available", ERROR_TYPE_UNAVAILABLE)).
            "no-slot" => json(
                503,
                r#"{"error":{"code":503,"message":"no slot available","type":"unavailable_error"}}"#
                    .into(),
            ),
            "error-in-stream" => sse(format!(
                "{}data: {{\"error\":{{\"code\":500,\"message\":\"model crashed\",\"type\":\"server_error\"}}}}\n\n",
                first_chunks(3)
            )),
            "cut" => sse(first_chunks(4)),
            "stall" => {
                let head = first_chunks(2);
                let body = futures::stream::once(async move { Ok::<_, std::io::Error>(head) })
                    .chain(futures::stream::pending());
                sse_stream(body)
            }
            // Every chunk of the basic answer, 300 ms apart: slow, but never stalled.
            "slow" => {
                let chunks: Vec<String> = fixture("stream-basic.sse")
                    .split("\n\n")
                    .filter(|e| !e.trim().is_empty())
                    .map(|e| format!("{e}\n\n"))
                    .collect();
                let body = futures::stream::iter(chunks).then(|chunk| async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok::<_, std::io::Error>(chunk)
                });
                sse_stream(body)
            }
            // Two chunks, then only heartbeats (a proxy keeping the connection open), 300 ms
            // apart, forever.
            "heartbeats" => {
                let head = first_chunks(2);
                let beats = futures::stream::unfold((), |()| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Some((Ok::<_, std::io::Error>("event: keepalive\ndata: \n\n".to_owned()), ()))
                });
                let body = futures::stream::once(async move { Ok::<_, std::io::Error>(head) })
                    .chain(beats);
                sse_stream(body)
            }
            // A very long answer, as fast as the reader takes it: a content chunk of the basic
            // answer repeated `LONG_ANSWER_TOKENS` times, then its finish chunk.
            "long" => {
                let basic = fixture("stream-basic.sse");
                let events: Vec<&str> = basic.split("\n\n").collect();
                let token = events[1].replace(
                    r#""content":"The""#,
                    &format!(r#""content":"{LONG_ANSWER_PIECE}""#),
                );
                let tail: String = events
                    .iter()
                    .skip_while(|e| !e.contains(r#""finish_reason":"stop""#))
                    .map(|e| format!("{e}\n\n"))
                    .collect();
                let batch = format!("{token}\n\n").repeat(100);
                let body = futures::stream::iter(
                    (0..LONG_ANSWER_TOKENS / 100).map(move |_| Ok::<_, std::io::Error>(batch.clone())),
                )
                .chain(futures::stream::once(async move { Ok(tail) }));
                sse_stream(body)
            }
            _ => json(404, r#"{"error":{"message":"no such scenario"}}"#.into()),
        }
    }

    let endless_dropped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let router = axum::Router::new()
        .route("/{scenario}/v1/chat/completions", post(chat))
        .route(
            "/{scenario}/v1/models",
            get(|| async { json(200, r#"{"object":"list","data":[]}"#.into()) }),
        )
        .with_state(Arc::clone(&endless_dropped));
    let addr = serve_router(router).await;
    Replay {
        addr,
        endless_dropped,
    }
}

/// Serves `router` on 127.0.0.1:0 for the rest of the test; its address.
pub async fn serve_router(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}
