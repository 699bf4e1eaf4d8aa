//! The exporters against real receivers: a Prometheus server scraping the app, the `ragchat`
//! binary exporting over OTLP to a real collector (rotel) and to an Application Insights
//! ingestion endpoint the test serves (the documented envelope format, gzip JSON on
//! `/v2/track`), and the same binary with both unreachable.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ragchat::chat::protocol::ServerFrame;
use serde_json::{Value, json};

use crate::procs::{Proc, free_port, tool};
use crate::support::{corpus_dir, llm_url, spawn_app, turn_frames};
use crate::telemetry::recording_proxy;

type Ws = crate::support::Ws;

/// Polls `check` every 200 ms until it holds or `limit` passes.
async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let t = Instant::now();
    while !check() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The binary `serve`, ingesting the fixture corpus at start, on a free port; ready when this
/// returns. `env` adds to (or overrides) its environment.
async fn serve_binary(data: &Path, llm: &str, env: &[(&str, String)]) -> (Proc, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut command = Command::new(env!("CARGO_BIN_EXE_ragchat"));
    command
        .arg("serve")
        .env("RAGCHAT_ADDR", addr.to_string())
        .env("RAGCHAT_DATA_DIR", data)
        .env("RAGCHAT_LLM_URL", llm)
        .env("RAGCHAT_LLM_MAX_TOKENS", "32")
        .env("RAGCHAT_TOP_K", "3")
        .env("RAGCHAT_INGEST_ON_START", corpus_dir())
        .env("RAGCHAT_LOG_FORMAT", "json")
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("OTEL_BLRP_SCHEDULE_DELAY", "200")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "1000");
    for (name, value) in env {
        command.env(name, value);
    }
    let proc = Proc::start(command);
    let ready = format!("http://{addr}/health/ready");
    let t = Instant::now();
    loop {
        if reqwest::get(&ready)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "ragchat not ready:\n{}",
            proc.output()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (proc, addr)
}

async fn connect_to(addr: SocketAddr) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("websocket connects");
    assert!(matches!(
        crate::support::next_frame(&mut ws).await,
        ServerFrame::Ready(_)
    ));
    ws
}

/// One streamed turn; every frame of it.
async fn turn(ws: &mut Ws, ask: Value) -> Vec<ServerFrame> {
    let mut ask = ask;
    ask["type"] = json!("ask");
    crate::support::send(ws, ask).await;
    turn_frames(ws).await
}

fn done_of(frames: &[ServerFrame]) -> &ragchat::chat::protocol::Done {
    match frames.last() {
        Some(ServerFrame::Done(done)) => done,
        other => panic!("expected done, got {other:?}"),
    }
}

/// One span as rotel prints it (`--debug-log traces --debug-log-verbosity detailed`).
struct Printed {
    trace: String,
    parent: String,
    id: String,
    name: String,
}

/// Every span in rotel's output.
fn printed_spans(out: &str) -> Vec<Printed> {
    let mut spans = Vec::new();
    let (mut trace, mut parent, mut id) = (String::new(), String::new(), String::new());
    for line in out.lines() {
        let line = line.trim_start();
        let value = |key: &str| {
            let rest = line.strip_prefix(key)?.trim_start();
            Some(rest.strip_prefix(':')?.trim().to_owned())
        };
        if let Some(v) = value("Trace ID") {
            trace = v;
        } else if let Some(v) = value("Parent ID") {
            parent = v;
        } else if let Some(v) = value("ID") {
            id = v;
        } else if let Some(name) = value("Name") {
            spans.push(Printed {
                trace: trace.clone(),
                parent: parent.clone(),
                id: id.clone(),
                name,
            });
        }
    }
    spans
}

/// A Prometheus server (the Debian package) scraping `target` every second.
fn prometheus(dir: &Path, target: SocketAddr) -> (Proc, String) {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ragchat\n    \
             static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .expect("config");
    let port = free_port();
    let mut command = Command::new(tool("prometheus"));
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
    (Proc::start(command), format!("http://127.0.0.1:{port}"))
}

/// One instant query's single value.
async fn query(prometheus: &str, promql: &str) -> Option<f64> {
    let body: Value = reqwest::Client::new()
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", promql)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test]
async fn prometheus_scrapes_turns_time_to_first_token_and_sockets() {
    let app = spawn_app(&llm_url(), &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (prom, api) = prometheus(dir.path(), app.addr);
    let mut ws = crate::support::connect(&app).await;
    for n in 0..3 {
        let frames = turn(
            &mut ws,
            json!({"question":"Who keeps the lighthouse?","turn_id":format!("p{n}")}),
        )
        .await;
        done_of(&frames);
    }
    // The socket stays open: the gauge says so while Prometheus scrapes.
    let checks = [
        ("sum(ragchat_turns_total{outcome=\"completed\"})", 3.0),
        ("sum(gen_ai_server_time_to_first_token_seconds_count)", 3.0),
        ("ragchat_sessions_open", 1.0),
        ("min(ragchat_component_up)", 1.0),
    ];
    let t = Instant::now();
    for (promql, want) in checks {
        loop {
            let got = query(&api, promql).await;
            if got == Some(want) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{promql}: Prometheus has {got:?}, want {want}\n{}",
                prom.output()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let p99 = query(
        &api,
        "histogram_quantile(0.99, sum by (le) (gen_ai_server_time_to_first_token_seconds_bucket))",
    )
    .await
    .expect("a TTFT quantile");
    assert!(p99 > 0.0 && p99 < 120.0, "TTFT p99 {p99} s");

    // The exposition passes Prometheus's own linter, and the alert rules its checker.
    let text = reqwest::get(app.http("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let mut lint = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(&mut lint.stdin.take().expect("stdin"), text.as_bytes())
        .expect("write");
    let linted = lint.wait_with_output().expect("promtool ends");
    assert!(
        linted.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&linted.stdout),
        String::from_utf8_lossy(&linted.stderr)
    );
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/observability/alerts.yml");
    let checked = Command::new(tool("promtool"))
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .expect("promtool");
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );
    drop(ws);
    drop(prom);
    app.stop().await;
}

/// What an Application Insights ingestion endpoint received: every envelope, decompressed.
#[derive(Clone, Default)]
struct Ingestion {
    envelopes: Arc<Mutex<Vec<Value>>>,
}

impl Ingestion {
    fn find(&self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        self.envelopes
            .lock()
            .expect("lock")
            .iter()
            .find(|e| pred(e))
            .cloned()
    }
}

/// Serves `POST /v2/track` over HTTPS as Application Insights does (gzip JSON array in, counts
/// out): the exporter turns any ingestion endpoint into `https://`. Its certificate (made with
/// the `openssl` command) is returned for the child's `SSL_CERT_FILE`: its test CA.
async fn ingestion_endpoint(dir: &Path) -> (String, Ingestion, PathBuf) {
    use axum::body::Bytes;
    use axum::extract::State;
    async fn track(State(seen): State<Ingestion>, body: Bytes) -> axum::Json<Value> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .expect("gzip JSON");
        let batch: Vec<Value> = serde_json::from_str(&text).expect("an array of envelopes");
        let n = batch.len();
        seen.envelopes.lock().expect("lock").extend(batch);
        axum::Json(json!({"itemsReceived": n, "itemsAccepted": n, "errors": []}))
    }
    // A test CA, and the endpoint's certificate signed by it (a CA may not serve TLS itself).
    let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let (cert, key, csr) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("cert.csr"),
    );
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let path = |p: &PathBuf| p.display().to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-days", "1", "-subj", "/CN=ragchat test CA"],
            &["-keyout", &path(&ca_key), "-out", &path(&ca)],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                &path(&key),
                "-out",
                &path(&csr),
            ],
        ]
        .concat(),
    );
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path(&csr),
        "-CA",
        &path(&ca),
        "-CAkey",
        &path(&ca_key),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &path(&ext),
        "-out",
        &path(&cert),
    ]);
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(&cert)
        .expect("cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let private = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).expect("key");
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(chain, private)
    .expect("TLS config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let seen = Ingestion::default();
    let app = axum::Router::new()
        .route("/v2/track", axum::routing::post(track))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("https://{addr}/"), seen, ca)
}

const IKEY: &str = "00000000-0000-4000-8000-0000000000aa";

#[tokio::test]
async fn a_turn_reaches_an_otlp_collector_and_application_insights_as_one_trace() {
    let otlp_port = free_port();
    let mut rotel = Command::new(tool("rotel"));
    rotel.args([
        "start",
        "--otlp-http-endpoint",
        &format!("127.0.0.1:{otlp_port}"),
        "--otlp-grpc-endpoint",
        &format!("127.0.0.1:{}", free_port()),
        "--exporter",
        "blackhole",
        "--debug-log",
        "traces",
        "--debug-log-verbosity",
        "detailed",
    ]);
    let collector = Proc::start(rotel);
    let data = tempfile::tempdir().expect("tempdir");
    let (ingestion, seen, cert) = ingestion_endpoint(data.path()).await;
    let (proxy, to_llm) = recording_proxy().await;
    let connection = format!("InstrumentationKey={IKEY};IngestionEndpoint={ingestion}");
    let (mut server, addr) = serve_binary(
        data.path(),
        &proxy,
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{otlp_port}"),
            ),
            ("APPLICATIONINSIGHTS_CONNECTION_STRING", connection.clone()),
            // The test endpoint's own certificate is the only one this process trusts.
            ("SSL_CERT_FILE", cert.display().to_string()),
        ],
    )
    .await;

    let mut ws = connect_to(addr).await;
    let first = turn(
        &mut ws,
        json!({"question":"Who keeps the Saltmere lighthouse?"}),
    )
    .await;
    let conversation = done_of(&first).conversation_id.clone();
    // A follow-up in the stored conversation: its trace has a `history` span too.
    let frames = turn(
        &mut ws,
        json!({"question":"When was it first lit?","conversation_id":conversation}),
    )
    .await;
    let done = done_of(&frames);
    let trace_id = done.trace_id.clone().expect("done carries the trace id");

    // The collector got the turn's spans: `chat.turn`, in that trace, parent of the phases (a
    // follow-up is rewritten into a standalone query first: `rewrite`).
    let phases = [
        "embed",
        "history",
        "rewrite",
        "retrieve",
        "llm.stream",
        "record",
    ];
    let tree = |out: &str| {
        let spans = printed_spans(out);
        let root = spans
            .iter()
            .find(|s| s.trace == trace_id && s.name == "chat.turn")?;
        let mut children: Vec<&str> = spans
            .iter()
            .filter(|s| s.trace == trace_id && s.parent == root.id)
            .map(|s| s.name.as_str())
            .collect();
        children.sort_unstable();
        children.dedup();
        Some(children.join(","))
    };
    let mut want = phases.to_vec();
    want.sort_unstable();
    let want = want.join(",");
    eventually(
        "rotel prints the turn's spans",
        Duration::from_secs(30),
        || tree(&collector.output()).as_deref() == Some(want.as_str()),
    )
    .await;
    // The LLM request carried that trace.
    let sent = to_llm.lock().expect("lock").clone();
    assert!(
        sent.iter().any(|tp| tp.contains(&trace_id)),
        "llama-server's traceparent belongs to the turn's trace: {sent:?}"
    );

    // Application Insights: the turn as a request, the model call as a dependency, one
    // operation id (the trace id), and metrics.
    let of_turn = |e: &Value| e["tags"]["ai.operation.id"] == trace_id.as_str();
    let names = || {
        seen.envelopes
            .lock()
            .expect("lock")
            .iter()
            .map(|e| {
                format!(
                    "{} {} {}",
                    e["name"], e["tags"]["ai.operation.id"], e["data"]["baseData"]["name"]
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let t = Instant::now();
    while seen
        .find(|e| {
            e["name"] == "Microsoft.ApplicationInsights.Request"
                && of_turn(e)
                && e["data"]["baseData"]["name"] == "chat.turn"
        })
        .is_none()
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no request envelope for trace {trace_id}; got:\n{}\n{}",
            names(),
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eventually("the request envelope", Duration::from_secs(1), || {
        seen.find(|e| {
            e["name"] == "Microsoft.ApplicationInsights.Request"
                && of_turn(e)
                && e["data"]["baseData"]["name"] == "chat.turn"
        })
        .is_some()
    })
    .await;
    let dependency = seen
        .find(|e| e["name"] == "Microsoft.ApplicationInsights.RemoteDependency" && of_turn(e))
        .expect("the model call is a dependency of the turn");
    assert_eq!(dependency["iKey"], IKEY);
    eventually("metric envelopes", Duration::from_secs(30), || {
        seen.find(|e| {
            e["name"] == "Microsoft.ApplicationInsights.Metric"
                && e["data"]["baseData"]["metrics"][0]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("ragchat.turns"))
        })
        .is_some()
    })
    .await;

    drop(ws);
    let status = server.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}:\n{}", server.output());
    let log = server.output();
    assert!(
        !log.contains(IKEY),
        "the connection string is a secret: never in the log"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("\"turn ended\"")
                && l.contains(&format!("\"trace_id\":\"{trace_id}\""))),
        "log lines carry the trace id:\n{log}"
    );
    drop(collector);
}

#[tokio::test]
async fn unreachable_exporters_never_touch_a_turn_and_are_counted() {
    let otlp = format!("http://127.0.0.1:{}", free_port());
    let ingestion = format!("http://127.0.0.1:{}", free_port());
    let data = tempfile::tempdir().expect("tempdir");
    let (mut server, addr) = serve_binary(
        data.path(),
        &llm_url(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp),
            (
                "APPLICATIONINSIGHTS_CONNECTION_STRING",
                format!("InstrumentationKey={IKEY};IngestionEndpoint={ingestion}/"),
            ),
        ],
    )
    .await;
    let mut ws = connect_to(addr).await;
    for n in 0..3 {
        let frames = turn(
            &mut ws,
            json!({"question":"What is Saltmere?","turn_id":format!("u{n}")}),
        )
        .await;
        assert!(
            frames.iter().any(|f| matches!(f, ServerFrame::Token(_))),
            "the answer streams"
        );
        done_of(&frames);
    }
    let metrics = format!("http://{addr}/metrics");
    let t = Instant::now();
    loop {
        let text = reqwest::get(&metrics)
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body");
        let dropped = text.lines().any(|l| {
            l.starts_with("ragchat_telemetry_dropped_total")
                && l.contains("signal=\"traces\"")
                && l.contains("exporter=\"otlp\"")
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) > Some(0.0)
        });
        if dropped {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no dropped-export count:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(ws);
    // Shutdown flushes within its bound even though nothing receives.
    let status = server.terminate(Duration::from_secs(40));
    assert!(status.success(), "{status}:\n{}", server.output());
}
