//! The session's frame handling: any sequence of client events (text frames that are asks,
//! cancels, auth frames or arbitrary text; binary frames; pings; oversized or non-UTF-8 frames;
//! pauses), against a service that needs no credential or an API key. The session never panics,
//! ends when the client leaves, sends only frames of the protocol and nothing after its close,
//! and every turn that started ends with exactly one `done` or `error` before the next starts
//! (a turn cancelled before its `sources` may end with a `done` alone).
#![no_main]

use std::time::Duration;

use futures::StreamExt as _;
use futures::channel::mpsc;
use libfuzzer_sys::fuzz_target;
use ragchat::chat::fakes::{self, FakeLlm, tokens};
use ragchat::chat::protocol::ServerFrame;
use ragchat::chat::session::{self, Incoming, Outgoing, Peer};
use serde_json::json;

const KEY: &str = "k-fuzz-0123456789abcdefghijkl";

fuzz_target!(|input: (bool, Vec<(u8, String)>)| {
    let (needs_key, events) = input;
    if events.len() > 64 {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(drive(needs_key, events));
});

/// The event a fuzzed `(kind, text)` pair stands for.
fn event(i: usize, kind: u8, text: String) -> Result<Incoming, Duration> {
    Ok(match kind % 10 {
        0 => Incoming::Text(text),
        1 => Incoming::Text(json!({"type": "ask", "question": text}).to_string()),
        2 => Incoming::Text(
            json!({"type": "ask", "question": "q", "turn_id": format!("{text}-{i}")}).to_string(),
        ),
        3 => Incoming::Text(json!({"type": "cancel", "turn_id": text}).to_string()),
        4 => Incoming::Text(json!({"type": "auth", "token": text}).to_string()),
        5 => Incoming::Text(json!({"type": "auth", "token": KEY}).to_string()),
        6 => Incoming::Binary,
        7 => Incoming::Heartbeat,
        8 if text.len() % 2 == 0 => Incoming::TooLarge,
        8 => Incoming::BadUtf8,
        _ => return Err(Duration::from_millis(10 * text.len().min(1000) as u64)),
    })
}

async fn drive(needs_key: bool, events: Vec<(u8, String)>) {
    let keys = format!("fuzz={KEY}");
    let flags: &[&str] = if needs_key {
        &["--auth", "api_key", "--api-keys", &keys]
    } else {
        &[]
    };
    let app = fakes::app(FakeLlm::new(tokens(3, Duration::from_millis(50))), flags);
    let (to_server, incoming) = mpsc::unbounded();
    let (outgoing, mut from_server) = mpsc::channel(4096);
    let state = app.state.clone();
    let peer = Peer::at("127.0.0.1".parse().expect("ip"));
    let session =
        tokio::spawn(async move { session::run(state, peer, incoming, outgoing).await.code });
    for (i, (kind, text)) in events.into_iter().enumerate() {
        match event(i, kind, text) {
            Ok(frame) => {
                // The session may have closed already (a bad frame, no credential): that is fine.
                let _ = to_server.unbounded_send(frame);
            }
            Err(pause) => tokio::time::sleep(pause).await,
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _ = to_server.unbounded_send(Incoming::Closed);
    tokio::time::timeout(Duration::from_secs(3600), session)
        .await
        .expect("the session ends once the client has left")
        .expect("the session does not panic");

    let mut open: Option<String> = None;
    let mut closed = false;
    while let Ok(Some(out)) = from_server.try_next() {
        assert!(!closed, "nothing after the close frame");
        let json = match out {
            Outgoing::Text(json) => json,
            Outgoing::Ping => continue,
            Outgoing::Close(code, reason) => {
                assert!((1000..5000).contains(&code), "close code {code}");
                assert!(reason.len() <= 123, "a close reason fits a control frame");
                closed = true;
                continue;
            }
        };
        match serde_json::from_str::<ServerFrame>(&json).expect("only frames of the protocol") {
            ServerFrame::Sources(s) => {
                assert!(open.is_none(), "one turn at a time");
                open = Some(s.turn_id);
            }
            ServerFrame::Token(t) => {
                assert_eq!(
                    open.as_deref(),
                    Some(t.turn_id.as_str()),
                    "tokens of the open turn only"
                );
            }
            ServerFrame::Done(d) => {
                // A turn cancelled before it retrieved (an ask then at once a cancel, or a frame
                // that closes the socket) ends with a `done` that no `sources` preceded.
                if let Some(o) = open.take() {
                    assert_eq!(o, d.turn_id, "done ends the open turn");
                }
            }
            ServerFrame::Error(e) => {
                assert!(e.message.len() < 2048, "bounded error messages");
                if open.is_some() && e.turn_id == open {
                    open = None;
                }
            }
            ServerFrame::Ready(_) => {}
        }
    }
    assert!(open.is_none(), "every turn that started ended");
    drop(app);
}
