//! The session over in-memory channels, with fake backends and paused tokio time: keep-alive,
//! one turn at a time, cancel, shutdown, a panicking turn, a client that stops reading, and the
//! final frame always last.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use serde_json::json;

use super::{CLOSE_NORMAL, CLOSE_RESTART, CLOSE_TOO_BIG, Incoming, Outgoing, run};
use crate::chat::fakes::{self, FakeApp, FakeLlm, Step, tokens};
use crate::chat::protocol::{Done, ServerFrame};
use crate::error::ErrorCode;
use crate::store::TurnStatus;
use crate::turn::FinishReason;

/// The client's end of a session.
struct Client {
    to_server: mpsc::UnboundedSender<Incoming>,
    from_server: mpsc::Receiver<Outgoing>,
    session: tokio::task::JoinHandle<()>,
}

/// Starts a session over `app`; the server may have `buffer` frames in flight to the client.
fn connect(app: &FakeApp, buffer: usize) -> Client {
    let (to_server, incoming) = mpsc::unbounded();
    let (outgoing, from_server) = mpsc::channel(buffer);
    let state = app.state.clone();
    let peer = super::Peer::at("127.0.0.1".parse().expect("ip"));
    // Awaited by `Client::ended` (or dropped with the test's runtime).
    #[allow(clippy::disallowed_methods)]
    let session = tokio::spawn(async move {
        run(state, peer, incoming, outgoing).await;
    });
    Client {
        to_server,
        from_server,
        session,
    }
}

impl Client {
    fn send(&mut self, frame: serde_json::Value) {
        self.to_server
            .unbounded_send(Incoming::Text(frame.to_string()))
            .expect("session listens");
    }

    /// The next thing the server sends, pings included.
    async fn next(&mut self) -> Outgoing {
        tokio::time::timeout(Duration::from_secs(3600), self.from_server.next())
            .await
            .expect("the server sends something within an hour")
            .expect("the session is open")
    }

    /// The next frame, pings skipped.
    async fn frame(&mut self) -> ServerFrame {
        loop {
            match self.next().await {
                Outgoing::Text(json) => return serde_json::from_str(&json).expect("a frame"),
                Outgoing::Ping => continue,
                Outgoing::Close(code, reason) => panic!("closed {code} {reason}"),
            }
        }
    }

    /// Frames up to and including the turn's `done` or `error`.
    async fn turn(&mut self) -> Vec<ServerFrame> {
        let mut frames = Vec::new();
        loop {
            let frame = self.frame().await;
            let last = matches!(frame, ServerFrame::Done(_) | ServerFrame::Error(_));
            frames.push(frame);
            if last {
                return frames;
            }
        }
    }

    /// The close frame, pings skipped; text frames are not expected.
    async fn close(&mut self) -> (u16, &'static str) {
        loop {
            match self.next().await {
                Outgoing::Close(code, reason) => return (code, reason),
                Outgoing::Ping => continue,
                Outgoing::Text(json) => panic!("expected a close, got {json}"),
            }
        }
    }

    /// Waits for the session to end.
    async fn ended(self) {
        tokio::time::timeout(Duration::from_secs(3600), self.session)
            .await
            .expect("the session ends")
            .expect("the session did not panic");
    }
}

fn done(frame: &ServerFrame) -> &Done {
    match frame {
        ServerFrame::Done(d) => d,
        other => panic!("expected done, got {other:?}"),
    }
}

fn error_code(frame: &ServerFrame) -> ErrorCode {
    match frame {
        ServerFrame::Error(e) => e.code,
        other => panic!("expected error, got {other:?}"),
    }
}

/// Flushes the record queue and returns the app's records.
async fn recorded(app: FakeApp, turn_id: &str) -> crate::store::TurnRecord {
    let FakeApp {
        state,
        store,
        recorder,
        ..
    } = app;
    drop(state);
    recorder.finish().await;
    store.get(turn_id).expect("the turn was recorded")
}

#[tokio::test(start_paused = true)]
async fn a_turn_streams_sources_then_tokens_then_done_last_and_is_recorded() {
    let app = fakes::app(FakeLlm::new(tokens(5, Duration::from_millis(20))), &[]);
    let mut client = connect(&app, 64);
    assert!(matches!(client.frame().await, ServerFrame::Ready(_)));
    client.send(json!({"type":"ask","question":"q","turn_id":"t1"}));
    let frames = client.turn().await;
    let ServerFrame::Sources(sources) = &frames[0] else {
        panic!("sources first: {frames:?}");
    };
    assert_eq!(sources.sources.len(), 2);
    let tokens: String = frames[1..frames.len() - 1]
        .iter()
        .map(|f| match f {
            ServerFrame::Token(t) => t.text.as_str(),
            other => panic!("only tokens between sources and done: {other:?}"),
        })
        .collect();
    assert_eq!(tokens, "w0 w1 w2 w3 w4 ");
    let done = done(frames.last().expect("frames"));
    assert_eq!(done.answer, tokens);
    assert_eq!(done.finish_reason, FinishReason::Stop);
    // Nothing of the turn follows its final frame: the next frame answers the next request.
    client.send(json!({"type":"subscribe"}));
    assert_eq!(error_code(&client.frame().await), ErrorCode::Unsupported);
    drop(client);
    let record = recorded(app, "t1").await;
    assert_eq!(record.status, TurnStatus::Completed);
    assert_eq!(record.answer, tokens);
}

#[tokio::test(start_paused = true)]
async fn a_second_ask_while_a_turn_runs_is_busy_and_the_first_goes_on() {
    let app = fakes::app(FakeLlm::new(tokens(3, Duration::from_secs(1))), &[]);
    let mut client = connect(&app, 64);
    client.frame().await;
    client.send(json!({"type":"ask","question":"q","turn_id":"first"}));
    client.send(json!({"type":"ask","question":"q","turn_id":"second"}));
    let mut busy = None;
    let finish = loop {
        match client.frame().await {
            ServerFrame::Error(e) => busy = Some((e.code, e.turn_id)),
            ServerFrame::Done(d) => break (d.turn_id, d.finish_reason),
            _ => {}
        }
    };
    assert_eq!(busy, Some((ErrorCode::Busy, Some("second".into()))));
    assert_eq!(finish, ("first".into(), FinishReason::Stop));
}

#[tokio::test(start_paused = true)]
async fn an_ask_reusing_the_running_turns_id_is_busy_without_ending_that_turn() {
    let app = fakes::app(FakeLlm::new(tokens(3, Duration::from_secs(1))), &[]);
    let mut client = connect(&app, 64);
    client.frame().await;
    client.send(json!({"type":"ask","question":"q","turn_id":"first"}));
    client.send(json!({"type":"ask","question":"again","turn_id":"first"}));
    let mut busy = None;
    let finish = loop {
        match client.frame().await {
            ServerFrame::Error(e) => busy = Some((e.code, e.turn_id)),
            ServerFrame::Done(d) => break (d.turn_id, d.finish_reason),
            _ => {}
        }
    };
    assert_eq!(
        busy,
        Some((ErrorCode::Busy, None)),
        "the refusal does not name the running turn"
    );
    assert_eq!(finish, ("first".into(), FinishReason::Stop));
}

/// Found by `make fuzz` (session target): an ask followed at once by a frame over the limit. The
/// turn is cancelled before it retrieved anything, so it ends with a `done` that no `sources`
/// preceded; it must still end, be recorded, and come before the 1009 close.
#[tokio::test(start_paused = true)]
async fn a_turn_cut_short_by_an_oversized_frame_still_ends_and_is_recorded() {
    let app = fakes::app(FakeLlm::new(tokens(3, Duration::from_secs(1))), &[]);
    let mut client = connect(&app, 64);
    client.frame().await;
    client.send(json!({"type":"ask","question":"*","turn_id":"cut"}));
    client
        .to_server
        .unbounded_send(Incoming::TooLarge)
        .expect("send");
    let end = done(&client.frame().await).clone();
    assert_eq!(
        (end.turn_id.as_str(), end.finish_reason),
        ("cut", FinishReason::Cancelled)
    );
    assert_eq!(client.close().await, (CLOSE_TOO_BIG, "frame too large"));
    client.ended().await;
    assert_eq!(recorded(app, "cut").await.status, TurnStatus::Cancelled);
}

#[tokio::test(start_paused = true)]
async fn cancel_ends_the_turn_with_its_partial_answer_and_lets_the_upstream_go() {
    let llm = FakeLlm::new(tokens(100, Duration::from_millis(100)));
    let upstream_dropped = llm.dropped.clone();
    let app = fakes::app(llm, &[]);
    let mut client = connect(&app, 64);
    client.frame().await;
    client.send(json!({"type":"ask","question":"q","turn_id":"t"}));
    let mut partial = String::new();
    while partial.len() < 9 {
        if let ServerFrame::Token(t) = client.frame().await {
            partial.push_str(&t.text);
        }
    }
    client.send(json!({"type":"cancel","turn_id":"t"}));
    let done = loop {
        match client.frame().await {
            ServerFrame::Token(t) => partial.push_str(&t.text),
            ServerFrame::Done(d) => break d,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(done.finish_reason, FinishReason::Cancelled);
    assert_eq!(done.answer, partial);
    assert!(partial.len() < 100 * 4, "stopped early: {partial}");
    assert!(
        upstream_dropped.load(Ordering::SeqCst),
        "the upstream request is let go"
    );
    drop(client);
    let record = recorded(app, "t").await;
    assert_eq!(record.status, TurnStatus::Cancelled);
    assert_eq!(record.finish_reason, Some(FinishReason::Cancelled));
    assert_eq!(record.answer, partial);
}

#[tokio::test(start_paused = true)]
async fn an_idle_socket_is_pinged_then_closed_and_client_pings_do_not_keep_it_open() {
    let flags = ["--ping-interval-secs", "1", "--idle-timeout-secs", "3"];
    let app = fakes::app(FakeLlm::new(vec![Step::Finish]), &flags);
    let mut client = connect(&app, 64);
    client.frame().await;
    let started = tokio::time::Instant::now();
    let mut pings = 0;
    let close = loop {
        // The client's WebSocket stack answers pings; that is not the user being there.
        let _ = client.to_server.unbounded_send(Incoming::Heartbeat);
        match client.next().await {
            Outgoing::Ping => pings += 1,
            Outgoing::Close(code, reason) => break (code, reason),
            Outgoing::Text(t) => panic!("{t}"),
        }
    };
    assert_eq!(close, (CLOSE_NORMAL, "idle timeout"));
    assert!(pings >= 2, "pinged every second: {pings}");
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_secs(3) && idle < Duration::from_secs(5),
        "{idle:?}"
    );
    client.ended().await;
}

#[tokio::test(start_paused = true)]
async fn a_running_turn_keeps_a_socket_open_past_the_idle_timeout() {
    let flags = ["--ping-interval-secs", "1", "--idle-timeout-secs", "3"];
    let app = fakes::app(FakeLlm::new(tokens(2, Duration::from_secs(5))), &flags);
    let mut client = connect(&app, 64);
    client.frame().await;
    client.send(json!({"type":"ask","question":"q"}));
    let frames = client.turn().await;
    assert_eq!(done(frames.last().expect("frames")).answer, "w0 w1 ");
    assert_eq!(client.close().await, (CLOSE_NORMAL, "idle timeout"));
}

#[tokio::test(start_paused = true)]
async fn shutdown_refuses_new_asks_lets_the_turn_finish_then_closes_with_1012() {
    let app = fakes::app(FakeLlm::new(tokens(10, Duration::from_millis(100))), &[]);
    let mut client = connect(&app, 64);
    client.frame().await;
    client.send(json!({"type":"ask","question":"q","turn_id":"t"}));
    assert!(matches!(client.frame().await, ServerFrame::Sources(_)));
    app.state.shutdown.cancel();
    client.send(json!({"type":"ask","question":"another","turn_id":"late"}));
    let mut refused = None;
    let done = loop {
        match client.frame().await {
            ServerFrame::Error(e) => refused = Some((e.code, e.turn_id)),
            ServerFrame::Done(d) => break d,
            _ => {}
        }
    };
    assert_eq!(
        refused,
        Some((ErrorCode::ShuttingDown, Some("late".into())))
    );
    assert_eq!(done.finish_reason, FinishReason::Stop, "the turn finished");
    assert_eq!(client.close().await, (CLOSE_RESTART, "server restarting"));
    client.ended().await;
}

#[tokio::test(start_paused = true)]
async fn a_turn_still_running_after_the_grace_period_is_cancelled_then_1012() {
    let script = vec![Step::Token("partial ".into()), Step::Stall];
    let app = fakes::app(FakeLlm::new(script), &["--shutdown-grace-secs", "2"]);
    let mut client = connect(&app, 64);
    client.frame().await;
    client.send(json!({"type":"ask","question":"q","turn_id":"t"}));
    loop {
        if let ServerFrame::Token(_) = client.frame().await {
            break;
        }
    }
    let shutdown_at = tokio::time::Instant::now();
    app.state.shutdown.cancel();
    let frames = client.turn().await;
    let done = done(frames.last().expect("frames"));
    assert_eq!(done.finish_reason, FinishReason::Cancelled);
    assert_eq!(done.answer, "partial ");
    let waited = shutdown_at.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(client.close().await, (CLOSE_RESTART, "server restarting"));
}

#[tokio::test(start_paused = true)]
async fn a_turn_that_panics_still_answers_internal_and_is_recorded() {
    let app = fakes::app(FakeLlm::panicking(), &[]);
    let mut client = connect(&app, 64);
    client.frame().await;
    client.send(json!({"type":"ask","question":"q","turn_id":"boom"}));
    let frames = client.turn().await;
    match frames.last() {
        Some(ServerFrame::Error(e)) => {
            assert_eq!(e.code, ErrorCode::Internal);
            assert_eq!(e.turn_id.as_deref(), Some("boom"));
        }
        other => panic!("expected internal, got {other:?}"),
    }
    // The socket still answers.
    client.send(json!({"type":"ask","question":"   "}));
    assert_eq!(error_code(&client.frame().await), ErrorCode::BadRequest);
    drop(client);
    let record = recorded(app, "boom").await;
    assert_eq!(record.status, TurnStatus::Failed);
    assert_eq!(record.error.map(|e| e.code), Some(ErrorCode::Internal));
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_given_up_after_the_send_timeout() {
    // An endless answer, and room for only two frames in flight to the client.
    let mut script = tokens(1_000, Duration::ZERO);
    script.insert(0, Step::Wait(Duration::from_millis(1)));
    let llm = FakeLlm::new(script);
    let upstream_dropped = llm.dropped.clone();
    let app = fakes::app(llm, &[]);
    let mut client = connect(&app, 2);
    client.frame().await;
    client.send(json!({"type":"ask","question":"q","turn_id":"stuck"}));
    let stopped_reading = tokio::time::Instant::now();
    // The client reads nothing more; its session must end on its own.
    let Client {
        session,
        from_server,
        to_server,
    } = client;
    tokio::time::timeout(Duration::from_secs(60), session)
        .await
        .expect("the session gives up on the client")
        .expect("no panic");
    let gave_up = stopped_reading.elapsed();
    assert!(
        gave_up >= Duration::from_secs(10) && gave_up < Duration::from_secs(12),
        "one send timeout, not one per writer: {gave_up:?}"
    );
    assert!(
        upstream_dropped.load(Ordering::SeqCst),
        "the upstream is let go"
    );
    drop((from_server, to_server));
    let record = recorded(app, "stuck").await;
    assert_eq!(record.status, TurnStatus::Cancelled);
}

#[tokio::test(start_paused = true)]
async fn oversized_and_binary_frames_get_their_codes() {
    let app = fakes::app(FakeLlm::new(vec![Step::Finish]), &[]);
    let mut client = connect(&app, 64);
    client.frame().await;
    client
        .to_server
        .unbounded_send(Incoming::Binary)
        .expect("send");
    assert_eq!(error_code(&client.frame().await), ErrorCode::Unsupported);
    client
        .to_server
        .unbounded_send(Incoming::TooLarge)
        .expect("send");
    assert_eq!(client.close().await, (CLOSE_TOO_BIG, "frame too large"));
    client.ended().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_mid_turn_still_gets_its_turn_recorded() {
    let app = fakes::app(FakeLlm::new(tokens(50, Duration::from_millis(100))), &[]);
    let mut client = connect(&app, 64);
    client.frame().await;
    client.send(json!({"type":"ask","question":"q","turn_id":"gone"}));
    assert!(matches!(client.frame().await, ServerFrame::Sources(_)));
    client
        .to_server
        .unbounded_send(Incoming::Closed)
        .expect("send");
    // The session ends; no frame is sent after the client left (its channel closes cleanly).
    let Client {
        session,
        mut from_server,
        ..
    } = client;
    session.await.expect("no panic");
    while let Some(out) = from_server.next().await {
        assert!(
            matches!(out, Outgoing::Text(_)),
            "no close frame to a client that left: {out:?}"
        );
    }
    let record = recorded(app, "gone").await;
    assert_eq!(record.status, TurnStatus::Cancelled);
}

#[tokio::test(start_paused = true)]
async fn the_outgoing_sink_closing_ends_the_session() {
    let app = fakes::app(FakeLlm::new(vec![Step::Finish]), &[]);
    let mut client = connect(&app, 64);
    client.frame().await;
    client.from_server.close();
    // The next thing the session sends (a reply) fails: it ends.
    client.send(json!({"type":"subscribe"}));
    let _ = client.to_server.send(Incoming::Heartbeat).await;
    client.ended().await;
}

mod any_client {
    use proptest::prelude::*;

    use super::*;

    /// What a client may send, well-formed or not.
    fn incoming() -> impl Strategy<Value = Incoming> {
        prop_oneof![
            3 => Just(Incoming::Text(r#"{"type":"ask","question":"q"}"#.into())),
            2 => "[a-c]{1}".prop_map(|id| Incoming::Text(
                json!({"type":"ask","question":"q","turn_id":id}).to_string())),
            2 => Just(Incoming::Text(r#"{"type":"cancel"}"#.into())),
            1 => Just(Incoming::Text(r#"{"type":"auth","token":"x"}"#.into())),
            2 => ".{0,40}".prop_map(Incoming::Text),
            1 => Just(Incoming::Binary),
            1 => Just(Incoming::Heartbeat),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever a client sends, the session never panics, ends when the client leaves, and
        /// every turn that started (its `sources` went out) ends with exactly one `done` or
        /// `error`, after which nothing of it follows.
        #[test]
        fn any_sequence_of_frames_keeps_the_turn_contract(
            frames in prop::collection::vec((incoming(), 0u64..300), 1..30)
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let app = fakes::app(FakeLlm::new(tokens(3, Duration::from_millis(50))), &[]);
                let client = connect(&app, 1024);
                // Turn ids from a small set, so asks reuse the running turn's id and earlier ones.
                for (frame, gap) in frames {
                    client.to_server.unbounded_send(frame).expect("open");
                    tokio::time::sleep(Duration::from_millis(gap)).await;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
                client.to_server.unbounded_send(Incoming::Closed).expect("open");
                let Client { session, mut from_server, .. } = client;
                tokio::time::timeout(Duration::from_secs(60), session)
                    .await
                    .expect("the session ends")
                    .expect("no panic");
                let mut open: Option<String> = None;
                while let Ok(out) = from_server.try_recv() {
                    let Outgoing::Text(json) = out else { continue };
                    match serde_json::from_str::<ServerFrame>(&json).expect("a frame") {
                        ServerFrame::Sources(s) => {
                            assert!(open.is_none(), "one turn at a time");
                            open = Some(s.turn_id);
                        }
                        ServerFrame::Token(t) => {
                            assert_eq!(open.as_deref(), Some(t.turn_id.as_str()), "tokens of the open turn only");
                        }
                        ServerFrame::Done(d) => {
                            // A turn cancelled before its sources ends with a `done` alone.
                            if let Some(o) = open.take() {
                                assert_eq!(o, d.turn_id, "done ends the open turn");
                            }
                        }
                        ServerFrame::Error(e) => {
                            if open.is_some() && e.turn_id == open {
                                open = None;
                            }
                        }
                        ServerFrame::Ready(_) | ServerFrame::FeedbackSaved(_) => {}
                    }
                }
                assert!(open.is_none(), "every started turn ended");
            });
        }
    }
}

#[tokio::test(start_paused = true)]
async fn feedback_on_an_ended_turn_is_saved_on_its_record() {
    let app = fakes::app(FakeLlm::new(tokens(3, Duration::from_millis(20))), &[]);
    let mut client = connect(&app, 64);
    assert!(matches!(client.frame().await, ServerFrame::Ready(_)));
    client.send(json!({"type":"ask","question":"q","turn_id":"t1"}));
    client.turn().await;
    client.send(json!({"type":"feedback","turn_id":"t1","rating":"up"}));
    let ServerFrame::FeedbackSaved(saved) = client.frame().await else {
        panic!("expected feedback_saved");
    };
    assert_eq!(saved.turn_id, "t1");
    // A change of mind replaces the rating.
    client.send(
        json!({"type":"feedback","turn_id":"t1","rating":"down","comment":"  wrong keeper "}),
    );
    assert!(matches!(
        client.frame().await,
        ServerFrame::FeedbackSaved(_)
    ));
    drop(client);
    let record = recorded(app, "t1").await;
    let feedback = record.feedback.expect("rated");
    assert_eq!(feedback.rating, crate::chat::protocol::Rating::Down);
    assert_eq!(feedback.comment.as_deref(), Some("wrong keeper"));
    assert_eq!(
        record.answer, "w0 w1 w2 ",
        "the rest of the record is the turn's"
    );
}

#[tokio::test(start_paused = true)]
async fn feedback_for_an_unknown_or_running_turn_or_too_long_is_refused_without_naming_it() {
    let app = fakes::app(FakeLlm::new(tokens(50, Duration::from_millis(100))), &[]);
    let mut client = connect(&app, 64);
    assert!(matches!(client.frame().await, ServerFrame::Ready(_)));
    client.send(json!({"type":"feedback","turn_id":"nope","rating":"up"}));
    let ServerFrame::Error(e) = client.frame().await else {
        panic!("expected an error");
    };
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(e.message.contains("no turn \"nope\""), "{}", e.message);
    assert_eq!(
        e.turn_id, None,
        "an error naming a turn would end it for the client"
    );
    assert_eq!(e.feedback_for.as_deref(), Some("nope"));

    client.send(json!({"type":"ask","question":"q","turn_id":"t1"}));
    assert!(matches!(client.frame().await, ServerFrame::Sources(_)));
    client.send(json!({"type":"feedback","turn_id":"t1","rating":"up"}));
    let e = loop {
        match client.frame().await {
            ServerFrame::Token(_) => continue,
            ServerFrame::Error(e) => break e,
            other => panic!("expected an error, got {other:?}"),
        }
    };
    assert!(e.message.contains("still running"), "{}", e.message);
    assert_eq!(e.turn_id, None);
    let frames = client.turn().await;
    assert!(
        matches!(frames.last(), Some(ServerFrame::Done(_))),
        "the turn went on"
    );

    let long = "x".repeat(crate::chat::protocol::MAX_FEEDBACK_COMMENT_CHARS + 1);
    client.send(json!({"type":"feedback","turn_id":"t1","rating":"down","comment":long}));
    assert_eq!(error_code(&client.frame().await), ErrorCode::TooLarge);
    client.send(json!({"type":"feedback","turn_id":"t1","rating":"meh"}));
    assert_eq!(error_code(&client.frame().await), ErrorCode::BadRequest);

    // A socket that only rates runs out of ratings; the refusal still names no turn.
    let mut last = None;
    for _ in 0..64 {
        client.send(json!({"type":"feedback","turn_id":"t1","rating":"up"}));
        if let ServerFrame::Error(e) = client.frame().await {
            last = Some(e);
            break;
        }
    }
    let e = last.expect("the allowance runs out");
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!((e.turn_id, e.feedback_for.as_deref()), (None, Some("t1")));
}
