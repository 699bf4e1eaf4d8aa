//! The VM recipe rehearsed without Docker: the `ragchat` binary with exactly the environment
//! docker-compose.yml would give its container (deploy/vm/ragchat.env, then a `.env` of the test's
//! secrets and machine values, then the compose file's own `environment:`) behind a real Caddy
//! (the Debian package) running the repository's deploy/vm/Caddyfile with `tls internal`; spoken
//! to over https and wss as a browser and the deploy workflow's smoke script would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ragchat::chat::protocol::ServerFrame;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::procs::{Proc, free_port};
use crate::support::{close_of, corpus_dir, llm_url, next_frame, send, turn_frames};

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// The public name: `localhost`, so that a browser, Node and this test all reach Caddy without
/// a DNS entry; Caddy's internal CA issues its certificate.
const DOMAIN: &str = "localhost";

/// ragchat (as compose runs it) behind Caddy (as the VM runs it).
struct Rehearsal {
    ragchat: Proc,
    _caddy: Pid,
    /// Caddy's HTTPS port on loopback.
    port: u16,
    /// Caddy's root certificate (PEM): the one CA the clients trust.
    ca: PathBuf,
    /// The API key the test's `.env` gives the principal `tester`.
    key: String,
    _dir: tempfile::TempDir,
}

/// A process the test did not spawn itself (the script backgrounds Caddy): SIGTERM on drop.
struct Pid(u32);

impl Drop for Pid {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).status();
    }
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `KEY=VALUE` lines of an env file (`#` comments, blank lines skipped), as compose reads them.
fn env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=VALUE");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// The `environment:` of the compose file's ragchat service, `${RAGCHAT_DOMAIN…}` substituted.
fn compose_environment(compose: &str, domain: &str) -> Vec<(String, String)> {
    let service = compose
        .split("\n  caddy:")
        .next()
        .and_then(|s| s.split("\n  ragchat:").nth(1))
        .expect("a ragchat service before the caddy one");
    let block = service
        .split("\n    environment:\n")
        .nth(1)
        .expect("the ragchat service has an environment");
    block
        .lines()
        .take_while(|l| l.starts_with("      "))
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| {
            let (k, v) = l.trim().split_once(": ").expect("KEY: value");
            let mut value = v.trim().trim_matches('"').to_owned();
            while let Some(start) = value.find("${RAGCHAT_DOMAIN") {
                let end = start + value[start..].find('}').expect("closing brace");
                value.replace_range(start..=end, domain);
            }
            (k.to_owned(), value)
        })
        .collect()
}

impl Rehearsal {
    /// Starts both and waits until ragchat is ready through Caddy. `env` is the test's `.env`
    /// beyond the secrets and this machine's addresses.
    async fn start(extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = format!("k-tester-{}", uuid::Uuid::new_v4().simple());
        let upstream = format!("127.0.0.1:{}", free_port());

        // The image's ENV (Dockerfile), then ragchat.env, then .env, then compose's environment:
        // later wins, as in compose.
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let model_dir = std::env::var("RAGCHAT_EMBED_MODEL_DIR").expect("RAGCHAT_EMBED_MODEL_DIR");
        for (k, v) in [
            ("RAGCHAT_ADDR", "0.0.0.0:8000"),
            ("RAGCHAT_DATA_DIR", "/data"),
            ("RAGCHAT_EMBED_MODEL_DIR", model_dir.as_str()),
            ("RAGCHAT_LOG_FORMAT", "json"),
        ] {
            env.insert(k.into(), v.into());
        }
        let committed =
            std::fs::read_to_string(repo("deploy/vm/ragchat.env")).expect("deploy/vm/ragchat.env");
        env.extend(env_file(&committed));
        let data = dir.path().join("data");
        let dotenv = [
            // This machine: a free loopback port instead of the compose network's :8000, a
            // temp dir instead of the volume, the test's llama-server instead of OpenAI.
            ("RAGCHAT_ADDR", upstream.clone()),
            (
                "RAGCHAT_OPERATOR_ADDR",
                format!("127.0.0.1:{}", free_port()),
            ),
            ("RAGCHAT_DATA_DIR", data.display().to_string()),
            ("RAGCHAT_LLM_URL", llm_url()),
            ("RAGCHAT_LLM_MODEL", "smollm2".into()),
            ("RAGCHAT_LLM_MAX_TOKENS", "24".into()),
            (
                "RAGCHAT_INGEST_ON_START",
                corpus_dir().display().to_string(),
            ),
            // The secret the operator adds.
            ("RAGCHAT_API_KEYS", format!("tester={key}")),
        ];
        env.extend(dotenv.into_iter().map(|(k, v)| (k.to_owned(), v)));
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let compose = std::fs::read_to_string(repo("deploy/vm/docker-compose.yml"))
            .expect("deploy/vm/docker-compose.yml");
        env.extend(compose_environment(&compose, DOMAIN));

        let mut command = Command::new(env!("CARGO_BIN_EXE_ragchat"));
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(&env);
        let ragchat = Proc::start(command);

        // Caddy as `make test` runs it in front of the browser test (scripts/caddy-front.sh: the
        // VM's Caddyfile, `tls internal`, loopback); it returns once ragchat is ready through it.
        let port = upstream.rsplit_once(':').expect("port").1.to_owned();
        let started = tokio::process::Command::new(repo("scripts/caddy-front.sh"))
            .arg(&port)
            .arg(dir.path().join("caddy"))
            // Short, so that a socket outliving it shows the proxy does not cut idle sockets.
            .env("CADDY_IDLE_TIMEOUT", "2s")
            .stderr(std::process::Stdio::inherit())
            .output()
            .await
            .expect("scripts/caddy-front.sh runs");
        let line = String::from_utf8_lossy(&started.stdout).into_owned();
        let mut fields = line.split_whitespace();
        let (Some(port), Some(pid), Some(ca)) = (fields.next(), fields.next(), fields.next())
        else {
            panic!(
                "Caddy did not start in front of ragchat ({line:?})\n--- ragchat:\n{}",
                ragchat.output()
            );
        };
        let caddy = Pid(pid.parse().expect("pid"));
        let (port, ca) = (port.parse().expect("port"), PathBuf::from(ca));

        Self {
            ragchat,
            _caddy: caddy,
            port,
            ca,
            key,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{DOMAIN}:{}{path}", self.port)
    }

    /// An HTTPS client that trusts Caddy's CA and nothing else; HTTP/1.1, which an upgrade
    /// request needs.
    fn https(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.ca).expect("Caddy's root certificate");
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("PEM")])
            .http1_only()
            .build()
            .expect("client")
    }

    /// A wss upgrade through Caddy with the given extra headers: the socket, or why it was refused.
    async fn wss(
        &self,
        headers: &[(&str, String)],
    ) -> Result<Wss, tokio_tungstenite::tungstenite::Error> {
        use rustls::pki_types::pem::PemObject;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from_pem_file(&self.ca).expect("CA"))
            .expect("CA");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("Caddy accepts");
        let name = rustls::pki_types::ServerName::try_from(DOMAIN).expect("name");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("TLS with Caddy's certificate, trusted through its CA");
        let mut request = format!("wss://{DOMAIN}:{}/ws", self.port)
            .into_client_request()
            .expect("request");
        for (name, value) in headers {
            request.headers_mut().insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        tokio_tungstenite::client_async(request, tls)
            .await
            .map(|(ws, _)| ws)
    }

    /// The page's own origin, as a browser on `https://localhost:PORT` sends it.
    fn origin(&self) -> String {
        format!("https://{DOMAIN}:{}", self.port)
    }

    /// A socket as the page opens it: its origin, and the key in the first frame.
    async fn signed_in(&self) -> Wss {
        let mut ws = self
            .wss(&[("origin", self.origin())])
            .await
            .expect("the page's own origin is accepted through the proxy");
        send(&mut ws, json!({"type": "auth", "token": self.key})).await;
        match next_frame(&mut ws).await {
            ServerFrame::Ready(ready) => assert_eq!(ready.principal, "key:tester"),
            other => panic!("expected ready, got {other:?}"),
        }
        ws
    }
}

/// What a browser and the smoke script do on the VM, through the real proxy: the page over
/// https with both Caddy's and ragchat's security headers; a foreign origin refused and the
/// public one accepted (ragchat sees the host the browser asked for); a streamed turn; an idle
/// socket that outlives the proxy's idle timeout; and the deploy workflow's smoke script.
#[tokio::test]
async fn the_vm_recipe_serves_wss_through_caddy() {
    let vm = Rehearsal::start(&[("RAGCHAT_PING_INTERVAL_SECS", "1")]).await;

    let page = vm.https().get(vm.url("/")).send().await.expect("the page");
    assert_eq!(page.status(), 200);
    let headers = page.headers();
    assert!(
        headers.contains_key("strict-transport-security"),
        "Caddy's HSTS: {headers:?}"
    );
    assert!(
        headers.contains_key("content-security-policy"),
        "ragchat's CSP passes through: {headers:?}"
    );

    // A page elsewhere opening a socket here: refused with a typed error, through the proxy.
    let foreign = vm
        .https()
        .get(vm.url("/ws"))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("an answer");
    assert_eq!(foreign.status(), 403);
    let body: serde_json::Value = foreign.json().await.expect("a JSON body");
    assert_eq!(body["code"], "forbidden_origin", "{body}");

    // A streamed turn: sources, tokens as they come, done.
    let mut ws = vm.signed_in().await;
    send(
        &mut ws,
        json!({"type": "ask", "turn_id": "t-proxy", "question": "Who keeps the Zephyr lighthouse?"}),
    )
    .await;
    let frames = turn_frames(&mut ws).await;
    assert!(
        matches!(frames.first(), Some(ServerFrame::Sources(_))),
        "{frames:?}"
    );
    let tokens = frames
        .iter()
        .filter(|f| matches!(f, ServerFrame::Token(_)))
        .count();
    assert!(tokens >= 2, "tokens arrive one by one: {frames:?}");
    let Some(ServerFrame::Done(done)) = frames.last() else {
        panic!("the turn ends with done: {frames:?}");
    };
    assert!(!done.answer.is_empty());

    // Idle well past Caddy's idle timeout (2 s here): ragchat's pings cross the proxy and the
    // socket is still there for the next question.
    let held = Instant::now();
    let mut pings = 0;
    while held.elapsed() < Duration::from_secs(6) {
        match tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
            Err(_) => {}
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("the idle socket got {other:?}"),
        }
    }
    assert!(pings >= 3, "pings through the proxy: {pings}");
    send(
        &mut ws,
        json!({"type": "ask", "turn_id": "t-after-idle", "question": "And who built it?", "stream": false}),
    )
    .await;
    assert!(matches!(next_frame(&mut ws).await, ServerFrame::Done(_)));

    // The deploy workflow's smoke script, over wss, trusting Caddy's CA.
    let smoke = tokio::process::Command::new("node")
        .arg("--experimental-websocket")
        .arg(repo("scripts/smoke.mjs"))
        .arg(format!("wss://{DOMAIN}:{}/ws", vm.port))
        .env("NODE_EXTRA_CA_CERTS", &vm.ca)
        .env("SMOKE_API_KEY", &vm.key)
        .env("SMOKE_READY_TIMEOUT_MS", "30000")
        .output()
        .await
        .expect("node runs");
    assert!(
        smoke.status.success(),
        "smoke.mjs through Caddy: {}\n{}",
        String::from_utf8_lossy(&smoke.stdout),
        String::from_utf8_lossy(&smoke.stderr)
    );
}

/// A restart on the VM (`docker compose restart`, a SIGTERM): the client behind the proxy gets
/// its running answer's `done`, then the 1012 close the page reconnects on.
#[tokio::test]
async fn a_drain_reaches_the_client_through_caddy_as_1012() {
    let mut vm = Rehearsal::start(&[("RAGCHAT_SHUTDOWN_GRACE_SECS", "20")]).await;
    let mut ws = vm.signed_in().await;
    send(
        &mut ws,
        json!({"type": "ask", "turn_id": "t-drain", "question": "Who keeps the Zephyr lighthouse?"}),
    )
    .await;
    loop {
        if matches!(next_frame(&mut ws).await, ServerFrame::Token(_)) {
            break;
        }
    }
    let status = {
        let pid = vm.ragchat.child.id().to_string();
        let kill = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(kill.is_ok_and(|s| s.success()));
        close_of(&mut ws).await
    };
    let (code, _reason, frames) = status;
    assert!(
        frames.iter().any(|f| matches!(f, ServerFrame::Done(_))),
        "the running turn's done before the close: {frames:?}"
    );
    assert_eq!(code, 1012, "service restart, through the proxy");
    let exit = vm.ragchat.terminate(Duration::from_secs(30));
    assert!(exit.success(), "ragchat exits 0 after the drain: {exit:?}");
}
