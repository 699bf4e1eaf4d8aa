//! Safe on the public internet (docs/security.md), over real sockets: each authentication mode,
//! conversation ownership, the limits, connection hygiene, and what an unauthenticated caller
//! may learn. The model is the replay server (recorded llama-server answers): these tests are
//! about the service, not the answers.

use std::time::{Duration, Instant};

use futures::StreamExt;
use ragchat::chat::protocol::ServerFrame;
use ragchat::error::ErrorCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::oidc::{Issuer, Key, now};
use crate::support::{
    TestApp, close_of, dead_url, find_record, next_frame, refused, replay_server, send, spawn_app,
    turn_frames, upgrade_with,
};

const ALICE_KEY: &str = "k-alice-0123456789abcdefghij";
const BOB_KEY: &str = "k-bob-0123456789abcdefghijkl";

async fn basic_llm() -> String {
    format!("http://{}/basic/v1", replay_server().await)
}

/// An app that wants API keys (alice, bob) and gives a browser 1 s for its `auth` frame.
async fn keyed_app(extra: &[&str]) -> TestApp {
    let keys = format!("alice={ALICE_KEY},bob={BOB_KEY}");
    let mut flags = vec![
        "--auth",
        "api_key",
        "--api-keys",
        &keys,
        "--auth-timeout-secs",
        "1",
    ];
    flags.extend_from_slice(extra);
    spawn_app(&basic_llm().await, &flags).await
}

fn ready_principal(frame: &ServerFrame) -> String {
    match frame {
        ServerFrame::Ready(r) => r.principal.clone(),
        other => panic!("expected ready, got {other:?}"),
    }
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// One non-streaming turn; its `done`.
async fn ask(ws: &mut crate::support::Ws, body: serde_json::Value) -> ServerFrame {
    let mut body = body;
    body["type"] = json!("ask");
    body["stream"] = json!(false);
    send(ws, body).await;
    turn_frames(ws).await.pop().expect("a final frame")
}

#[tokio::test]
async fn api_keys_open_sockets_on_the_upgrade_or_in_the_first_frame() {
    let app = keyed_app(&[]).await;

    // The key on the upgrade (scripts): the socket acts for its principal and answers.
    let auth = bearer(ALICE_KEY);
    let mut ws = upgrade_with(&app, &[("authorization", &auth)])
        .await
        .expect("upgrade");
    assert_eq!(ready_principal(&next_frame(&mut ws).await), "key:alice");
    let done = ask(
        &mut ws,
        json!({"question":"What is the capital of France?"}),
    )
    .await;
    assert!(matches!(done, ServerFrame::Done(_)), "{done:?}");

    // A wrong key on the upgrade: HTTP 401 and a stable code, nothing else.
    let wrong = bearer("k-mallory-0123456789abcdefgh");
    let (status, body) = refused(
        upgrade_with(&app, &[("authorization", &wrong)])
            .await
            .expect_err("refused"),
    );
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthorized");
    assert!(!body.to_string().contains("mallory"), "{body}");

    // The key in the first frame (browsers): `ready` follows, naming the principal.
    let mut ws = upgrade_with(&app, &[]).await.expect("upgrade");
    send(&mut ws, json!({"type":"auth","token":BOB_KEY})).await;
    assert_eq!(ready_principal(&next_frame(&mut ws).await), "key:bob");

    // A wrong key in the first frame, an ask first, or nothing in time: 4401.
    for first in [
        Some(json!({"type":"auth","token":"nope"})),
        Some(json!({"type":"ask","question":"q"})),
        None,
    ] {
        let mut ws = upgrade_with(&app, &[]).await.expect("upgrade");
        let started = Instant::now();
        if let Some(frame) = &first {
            send(&mut ws, frame.clone()).await;
        }
        let (code, reason, frames) = close_of(&mut ws).await;
        assert_eq!((code, reason.as_str()), (4401, "unauthorized"), "{first:?}");
        assert!(
            matches!(frames.as_slice(), [ServerFrame::Error(e)] if e.code == ErrorCode::Unauthorized),
            "{frames:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "within the auth timeout"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn jwts_are_checked_against_the_issuers_keys_and_a_rotation_is_picked_up() {
    let es = Key::es256("es-1");
    let rs = Key::rs256("rs-1");
    let issuer = Issuer::start(&[&es, &rs]).await;
    let app = spawn_app(
        &basic_llm().await,
        &[
            "--auth",
            "jwt",
            "--jwt-issuer",
            &issuer.url,
            "--jwt-audience",
            "api://ragchat",
            "--jwt-refresh-secs",
            "1",
            "--auth-timeout-secs",
            "1",
        ],
    )
    .await;
    let claims = |overrides: serde_json::Value| {
        let mut c = json!({"sub":"user-1","iss":issuer.url,"aud":"api://ragchat","exp":now() + 600,"iat":now()});
        for (k, v) in overrides.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    };
    let principal_of = |token: String| {
        let app = &app;
        async move {
            let mut ws = upgrade_with(app, &[]).await.expect("upgrade");
            send(&mut ws, json!({"type":"auth","token":token})).await;
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str(&t).expect("frame") {
                    ServerFrame::Ready(r) => Ok(r.principal),
                    _ => Err(close_of(&mut ws).await.0),
                },
                other => panic!("{other:?}"),
            }
        }
    };
    assert_eq!(
        principal_of(es.sign(&claims(json!({})))).await,
        Ok("jwt:user-1".into())
    );
    assert_eq!(
        principal_of(rs.sign(&claims(json!({"sub":"user-2"})))).await,
        Ok("jwt:user-2".into())
    );
    let refusals = [
        ("expired", es.sign(&claims(json!({"exp": now() - 3600})))),
        (
            "not yet valid",
            es.sign(&claims(json!({"nbf": now() + 3600}))),
        ),
        (
            "another audience",
            es.sign(&claims(json!({"aud": "api://other"}))),
        ),
        (
            "another issuer",
            es.sign(&claims(json!({"iss": "https://evil.example"}))),
        ),
        ("no subject", es.sign(&claims(json!({"sub": null})))),
        ("alg none", alg_none(&claims(json!({})))),
        (
            "HS256 signed with the public key",
            hs256_with_public_key(&es, &claims(json!({}))),
        ),
        ("a tampered payload", tamper(&es.sign(&claims(json!({}))))),
    ];
    for (case, token) in refusals {
        assert_eq!(principal_of(token).await, Err(4401), "{case}");
    }
    // The issuer rotates to a new key: a token naming it makes ragchat fetch the keys again.
    let next = Key::es256("es-2");
    issuer.rotate(&[&next]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        principal_of(next.sign(&claims(json!({"sub":"user-3"})))).await,
        Ok("jwt:user-3".into())
    );
    // Made-up key ids cannot make it hammer the issuer: at most one fetch per refresh period.
    let before = issuer.fetches();
    for i in 0..20 {
        let forged = Key::es256(&format!("forged-{i}"));
        assert_eq!(
            principal_of(forged.sign(&claims(json!({})))).await,
            Err(4401)
        );
    }
    assert!(
        issuer.fetches() - before <= 2,
        "{} fetches",
        issuer.fetches() - before
    );
    // On the upgrade, a script's bearer token works the same.
    let token = format!("Bearer {}", es.sign(&claims(json!({}))));
    assert!(
        upgrade_with(&app, &[("authorization", &token)])
            .await
            .is_err(),
        "es-1 was rotated out"
    );
    app.stop().await;
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token that claims no signature at all.
fn alg_none(claims: &serde_json::Value) -> String {
    let header = b64(br#"{"alg":"none","typ":"JWT","kid":"es-1"}"#);
    format!("{header}.{}.", b64(claims.to_string().as_bytes()))
}

/// The classic confusion: HMAC-signed with the issuer's public key as the secret.
fn hs256_with_public_key(key: &Key, claims: &serde_json::Value) -> String {
    let public = serde_json::to_vec(&key.public).expect("jwk");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(key.kid.clone());
    let secret = jsonwebtoken::EncodingKey::from_secret(&public).expect("HMAC key");
    jsonwebtoken::encode(&header, claims, &secret).expect("signs")
}

/// The same signature over another payload.
fn tamper(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let payload = json!({"sub":"admin","iss":"x","aud":"api://ragchat","exp":now() + 600});
    format!(
        "{}.{}.{}",
        parts[0],
        b64(payload.to_string().as_bytes()),
        parts[2]
    )
}

#[tokio::test]
async fn easy_auth_headers_count_only_in_easy_auth_mode() {
    let id = (
        "x-ms-client-principal-id",
        "00000000-aaaa-bbbb-cccc-000000000001",
    );
    let easy = spawn_app(&basic_llm().await, &["--auth", "easy_auth"]).await;
    let mut ws = upgrade_with(&easy, &[id]).await.expect("upgrade");
    assert_eq!(
        ready_principal(&next_frame(&mut ws).await),
        "easyauth:00000000-aaaa-bbbb-cccc-000000000001"
    );
    easy.stop().await;
    // Anywhere else the header is a client's claim, and proves nothing.
    let keyed = keyed_app(&[]).await;
    let mut ws = upgrade_with(&keyed, &[id]).await.expect("upgrade");
    assert_eq!(close_of(&mut ws).await.0, 4401);
    keyed.stop().await;
}

#[tokio::test]
async fn a_public_address_without_authentication_refuses_to_start() {
    let bin = env!("CARGO_BIN_EXE_ragchat");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tokio::process::Command::new(bin)
        .args([
            "serve",
            "--addr",
            "0.0.0.0:0",
            "--embedder",
            "openai",
            "--embed-url",
            &dead_url(),
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .await
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "a configuration error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("RAGCHAT_AUTH") && stderr.contains("RAGCHAT_ALLOW_ANONYMOUS"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_principal_cannot_load_anothers_conversation_and_cannot_tell_it_exists() {
    let app = keyed_app(&[]).await;
    let connect = |key: &'static str| {
        let app = &app;
        async move {
            let auth = bearer(key);
            let mut ws = upgrade_with(app, &[("authorization", &auth)])
                .await
                .expect("upgrade");
            next_frame(&mut ws).await;
            ws
        }
    };
    let mut alice = connect(ALICE_KEY).await;
    let question = "My PIN is 4711-SECRET. What is the capital of France?";
    let done = ask(
        &mut alice,
        json!({"question":question,"turn_id":"a1","conversation_id":"conv-x"}),
    )
    .await;
    let ServerFrame::Done(first) = done else {
        panic!("{done:?}")
    };
    assert_eq!(
        first.conversation_id, "conv-x",
        "the client sees its own id"
    );
    // Alice's record: she is the user, whatever the client claimed.
    let record = crate::support::wait_record(&app, "a1").await;
    assert_eq!(record.user.as_deref(), Some("key:alice"));
    assert_ne!(
        record.conversation_id, "conv-x",
        "kept under alice's own name"
    );

    let mut bob = connect(BOB_KEY).await;
    let mut turns = Vec::new();
    for conversation in ["conv-x", "conv-never-used"] {
        let body = json!({"question":"What did I say before?","conversation_id":conversation});
        match ask(&mut bob, body).await {
            ServerFrame::Done(d) => turns.push((d.history_turns, d.answer.contains("4711"))),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        turns,
        [(0, false), (0, false)],
        "alice's conversation is like an unknown one"
    );
    // Alice continues her own.
    let done = ask(
        &mut alice,
        json!({"question":"And its size?","conversation_id":"conv-x"}),
    )
    .await;
    let ServerFrame::Done(second) = done else {
        panic!("{done:?}")
    };
    assert_eq!(second.history_turns, 1);
    // Bob reused alice's turn id in alice's conversation id: both records are there.
    let bob_same_id = ask(
        &mut bob,
        json!({"question":"q","turn_id":"a1","conversation_id":"conv-x"}),
    )
    .await;
    assert!(matches!(bob_same_id, ServerFrame::Done(_)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alices = find_record(app.state.store.as_ref(), &record.conversation_id, "a1").await;
    assert_eq!(
        alices.expect("still there").question,
        question,
        "not overwritten"
    );
    app.stop().await;
}

#[tokio::test]
async fn sockets_per_address_are_capped_with_retry_after() {
    let app = spawn_app(&dead_url(), &["--max-sockets-per-address", "50"]).await;
    let mut open = Vec::new();
    let mut refusals = Vec::new();
    for _ in 0..200 {
        match upgrade_with(&app, &[]).await {
            Ok(ws) => open.push(ws),
            Err(e) => refusals.push(e),
        }
    }
    assert_eq!(open.len(), 50);
    assert_eq!(refusals.len(), 150);
    for e in refusals {
        let tokio_tungstenite::tungstenite::Error::Http(response) = e else {
            panic!("{e}");
        };
        assert_eq!(response.status(), 429);
        assert!(response.headers().contains_key("retry-after"));
    }
    // A socket closed gives its place back.
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(upgrade_with(&app, &[]).await.is_ok());
    app.stop().await;
}

#[tokio::test]
async fn asks_over_the_turn_rate_are_rate_limited_and_the_hint_is_honoured() {
    let app = spawn_app(
        &basic_llm().await,
        &["--turns-per-minute", "60", "--turn-burst", "2"],
    )
    .await;
    let mut ws = crate::support::connect(&app).await;
    for _ in 0..2 {
        assert!(matches!(
            ask(&mut ws, json!({"question":"q"})).await,
            ServerFrame::Done(_)
        ));
    }
    let limited = ask(&mut ws, json!({"question":"q","turn_id":"third"})).await;
    let ServerFrame::Error(e) = limited else {
        panic!("{limited:?}")
    };
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.turn_id.as_deref(), Some("third"));
    let wait = e.retry_after_ms.expect("a retry hint");
    assert!((500..=1_100).contains(&wait), "about a second: {wait} ms");
    tokio::time::sleep(Duration::from_millis(wait)).await;
    assert!(
        matches!(
            ask(&mut ws, json!({"question":"q"})).await,
            ServerFrame::Done(_)
        ),
        "honoured"
    );
    app.stop().await;
}

#[tokio::test]
async fn beyond_the_concurrent_turns_asks_get_busy_within_the_wait_bound() {
    let slow = format!("http://{}/slow/v1", replay_server().await);
    let app = spawn_app(
        &slow,
        &["--max-concurrent-turns", "4", "--turn-queue-ms", "300"],
    )
    .await;
    let mut sockets = Vec::new();
    for _ in 0..10 {
        sockets.push(crate::support::connect(&app).await);
    }
    let asked = Instant::now();
    let outcomes =
        futures::future::join_all(sockets.iter_mut().enumerate().map(|(i, ws)| async move {
            send(
                ws,
                json!({"type":"ask","question":"q","turn_id":format!("t{i}")}),
            )
            .await;
            let last = turn_frames(ws).await.pop().expect("final");
            (last, asked.elapsed())
        }))
        .await;
    let mut streamed = 0;
    for (last, after) in outcomes {
        match last {
            ServerFrame::Done(_) => streamed += 1,
            ServerFrame::Error(e) => {
                assert_eq!(e.code, ErrorCode::Busy);
                assert!(e.retry_after_ms.is_some());
                assert!(
                    after < Duration::from_secs(2),
                    "refused at once, not queued: {after:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(streamed, 4);
    app.stop().await;
}

#[tokio::test]
async fn the_daily_token_allowance_ends_a_days_use() {
    let app = spawn_app(&basic_llm().await, &["--daily-tokens", "5"]).await;
    let mut ws = crate::support::connect(&app).await;
    assert!(matches!(
        ask(&mut ws, json!({"question":"q"})).await,
        ServerFrame::Done(_)
    ));
    let limited = ask(&mut ws, json!({"question":"q"})).await;
    let ServerFrame::Error(e) = limited else {
        panic!("{limited:?}")
    };
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert!(e.message.contains("midnight UTC"), "{}", e.message);
    let ms = e.retry_after_ms.expect("until midnight");
    assert!(ms > 0 && ms <= 86_400_000);
    app.stop().await;
}

#[tokio::test]
async fn half_open_upgrades_do_not_delay_a_good_client_and_are_dropped() {
    let app = spawn_app(&basic_llm().await, &["--header-timeout-secs", "1"]).await;
    // An attacker at another address (127.0.0.2): the good client is not one of its peers.
    let mut stalled = Vec::new();
    for _ in 0..100 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.2:0".parse().expect("addr"))
            .expect("bind");
        let mut tcp = socket.connect(app.addr).await.expect("connect");
        // Past the per-peer cap the server hangs up at once; the write may fail then.
        let _ = tcp
            .write_all(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n")
            .await;
        stalled.push(tcp);
    }
    let started = Instant::now();
    let mut ws = crate::support::connect(&app).await;
    assert!(matches!(
        ask(&mut ws, json!({"question":"q"})).await,
        ServerFrame::Done(_)
    ));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Past the header timeout the server has hung up on every one of them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut closed = 0;
    for mut tcp in stalled {
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => closed += 1,
            Ok(Ok(_)) => closed += 1, // a 408 before closing counts too
            Err(_) => {}
        }
    }
    assert_eq!(closed, 100);
    app.stop().await;
}

#[tokio::test]
async fn at_the_socket_cap_new_sockets_get_503_and_liveness_still_answers() {
    let app = spawn_app(&dead_url(), &["--max-connections", "5"]).await;
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(upgrade_with(&app, &[]).await.expect("upgrade"));
    }
    let (status, body) = refused(upgrade_with(&app, &[]).await.expect_err("refused"));
    assert_eq!(status, 503);
    assert_eq!(body["code"], "busy");
    let live = reqwest::get(app.http("/health/live")).await.expect("live");
    assert_eq!(live.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_frame_over_the_limit_is_answered_with_a_1009_the_client_reads() {
    let app = spawn_app(&dead_url(), &[]).await;
    let mut tcp = raw_upgrade(&app).await;
    // 1 MiB + 1 byte against the default 64 KiB, sent as a slow client would: the header and a
    // part, a pause (the server refuses the frame meanwhile), then the rest.
    let len: u64 = (1 << 20) + 1;
    let mut head = vec![0x81u8, 0xFF];
    head.extend_from_slice(&len.to_be_bytes());
    head.extend_from_slice(&[1, 2, 3, 4]);
    tcp.write_all(&head).await.expect("header");
    tcp.write_all(&[b'x'; 100_000]).await.expect("first part");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A server that hung up on the unread rest would reset these writes.
    let mut left = len as usize - 100_000;
    while left > 0 {
        let n = left.min(50_000);
        tcp.write_all(&vec![b'x'; n])
            .await
            .expect("the server takes the rest, no reset");
        left -= n;
    }
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("a close frame")
        .expect("read");
    assert!(n >= 4 && buf[0] == 0x88, "{:?}", &buf[..n]);
    assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), 1009);
    app.stop().await;
}

/// Upgrades a raw TCP connection (no WebSocket library), returning it after the 101 and the
/// `ready` frame.
async fn raw_upgrade(app: &TestApp) -> tokio::net::TcpStream {
    let mut tcp = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        app.addr
    );
    tcp.write_all(request.as_bytes()).await.expect("upgrade");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\"ready\"") {
        let n = tcp.read(&mut buf).await.expect("read");
        assert!(
            n > 0,
            "closed during the upgrade: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        seen.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    tcp
}

#[tokio::test]
async fn a_frame_begun_and_never_finished_is_closed_after_the_frame_timeout() {
    let app = spawn_app(&dead_url(), &["--frame-timeout-secs", "1"]).await;
    let mut tcp = raw_upgrade(&app).await;
    // A masked text frame announcing 60,000 bytes, of which 10 arrive.
    let mut frame = vec![0x81, 0xFE];
    frame.extend_from_slice(&60_000u16.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(b"0123456789");
    tcp.write_all(&frame).await.expect("partial frame");
    let started = Instant::now();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("the server acts")
        .expect("read");
    // A close frame: 0x88, length, code 1008.
    assert!(n >= 4 && buf[0] == 0x88, "{:?}", &buf[..n]);
    assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), 1008);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_provider_error_never_reaches_a_client_or_the_public_health() {
    let replay = replay_server().await;
    let url = format!("http://{replay}/unauthorized/v1");
    let app = keyed_app_with_llm(&url).await;
    let auth = bearer(ALICE_KEY);
    let mut ws = upgrade_with(&app, &[("authorization", &auth)])
        .await
        .expect("upgrade");
    next_frame(&mut ws).await;
    let last = ask(&mut ws, json!({"question":"q"})).await;
    let ServerFrame::Error(e) = last else {
        panic!("{last:?}")
    };
    assert_eq!(e.code, ErrorCode::LlmError);
    assert!(
        !e.message.contains("sk-") && !e.message.contains("Incorrect"),
        "{}",
        e.message
    );
    let ready = reqwest::get(app.http("/health/ready"))
        .await
        .expect("ready");
    let body = ready.text().await.expect("body");
    assert!(
        !body.contains("sk-") && !body.contains("Incorrect"),
        "{body}"
    );
    let details = reqwest::get(app.http("/health")).await.expect("details");
    assert_eq!(details.status(), 401, "details need a credential");
    let with_key = reqwest::Client::new()
        .get(app.http("/health"))
        .header("authorization", bearer(BOB_KEY))
        .send()
        .await
        .expect("details");
    assert_eq!(with_key.status(), 200);
    app.stop().await;
}

async fn keyed_app_with_llm(llm: &str) -> TestApp {
    let keys = format!("alice={ALICE_KEY},bob={BOB_KEY}");
    spawn_app(llm, &["--auth", "api_key", "--api-keys", &keys]).await
}

#[tokio::test]
async fn readiness_says_only_its_status() {
    let app = spawn_app(&dead_url(), &[]).await;
    let ready = reqwest::get(app.http("/health/ready"))
        .await
        .expect("ready");
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body, json!({"status":"unavailable","code":"not_ready"}));
    app.stop().await;
}

#[tokio::test]
async fn a_rebound_host_name_cannot_open_a_socket_and_huge_headers_are_refused() {
    let app = spawn_app(&dead_url(), &[]).await;
    let port = app.addr.port();
    let host = format!("evil.example:{port}");
    let origin = format!("http://evil.example:{port}");
    let err = upgrade_with(&app, &[("host", &host), ("origin", &origin)])
        .await
        .err();
    let (status, body) = refused(err.expect("refused"));
    assert_eq!(status, 403);
    assert_eq!(body["code"], "forbidden_origin");
    // The page's own origin by a known name is fine.
    let own = format!("http://localhost:{port}");
    let local = format!("localhost:{port}");
    assert!(
        upgrade_with(&app, &[("host", &local), ("origin", &own)])
            .await
            .is_ok()
    );
    // A 256 KB Origin never reaches a handler (or a log line).
    let huge = format!("http://{}.example", "a".repeat(256 * 1024));
    let err = upgrade_with(&app, &[("origin", &huge)])
        .await
        .expect_err("refused");
    let tokio_tungstenite::tungstenite::Error::Http(response) = err else {
        panic!("{err}")
    };
    assert_eq!(response.status(), 431);
    app.stop().await;
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_content_security_policy() {
    let app = spawn_app(&dead_url(), &[]).await;
    for path in ["/", "/app.js", "/app.css"] {
        let response = reqwest::get(app.http(path)).await.expect("page");
        assert_eq!(response.status(), 200, "{path}");
        let h = response.headers();
        let csp = h["content-security-policy"].to_str().expect("ascii");
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
    }
    let html = reqwest::get(app.http("/"))
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(
        !html.contains("<script>") && !html.contains("<style>"),
        "no inline code"
    );
    app.stop().await;
}

/// The resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn pings_from_a_client_that_never_reads_do_not_grow_the_server() {
    // The real binary, to read its memory alone.
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_ragchat"))
        .arg("serve")
        .args([
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--llm-url",
            &dead_url(),
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("serve");
    let pid = server.id().expect("pid");
    let mut tcp = loop {
        if let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            break tcp;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("upgrade");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    // 400,000 masked pings of 125 bytes (the most a control frame holds), and not one byte
    // read back: 50 MB of pongs the server cannot send.
    let mut ping = vec![0x89u8, 0x80 | 125, 1, 2, 3, 4];
    ping.extend(std::iter::repeat_n(b'p', 125));
    let batch: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 10_000)
        .collect();
    for _ in 0..40 {
        if tcp.write_all(&batch).await.is_err() {
            break; // dropped: fine too
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grew = rss_kib(pid).saturating_sub(before);
    assert!(grew < 16 * 1024, "the server grew by {grew} KiB");
    let _ = server.kill().await;
}

#[tokio::test]
async fn an_answer_is_cut_at_the_token_limit_even_when_the_model_ignores_it() {
    // The replayed answer is 60,000 pieces whatever max_tokens says.
    let long = format!("http://{}/long/v1", replay_server().await);
    let app = spawn_app(&long, &["--llm-max-tokens", "48"]).await;
    let mut ws = crate::support::connect(&app).await;
    send(&mut ws, json!({"type":"ask","question":"q"})).await;
    let frames = turn_frames(&mut ws).await;
    let tokens = frames
        .iter()
        .filter(|f| matches!(f, ServerFrame::Token(_)))
        .count();
    let Some(ServerFrame::Done(done)) = frames.last() else {
        panic!("{:?}", frames.last());
    };
    assert_eq!(done.finish_reason, ragchat::turn::FinishReason::Length);
    // Cut by count (a little past 48 pieces) or, these pieces being 200 bytes, by size.
    assert!(tokens <= 64, "{tokens} pieces");
    assert!(
        done.answer.len() <= 48 * 32 + 200,
        "{} bytes",
        done.answer.len()
    );
    app.stop().await;
}
