//! The WebSocket protocol end to end against the real pipeline.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use ragchat::chat::protocol::{FinishReason, ServerFrame};
use ragchat::error::ErrorCode;
use ragchat::store::TurnStatus;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::{
    LONG_ANSWER_PIECE, LONG_ANSWER_TOKENS, connect, dead_url, find_record, llm_url, next_frame,
    replay, replay_server, send, spawn_app, turn_frames, wait_record, wait_record_for,
};

const LIGHTHOUSE: &str = "Who is the keeper of the Zephyr lighthouse on Cape Brannock?";

fn done(frame: &ServerFrame) -> &ragchat::chat::protocol::Done {
    match frame {
        ServerFrame::Done(d) => d,
        other => panic!("expected done, got {other:?}"),
    }
}

fn error_code(frame: &ServerFrame) -> ErrorCode {
    match frame {
        ServerFrame::Error(e) => e.code,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_turn_streams_sources_tokens_then_done_and_is_recorded() {
    let app = spawn_app(&llm_url(), &[]).await;
    let mut ws = connect(&app).await;
    send(
        &mut ws,
        json!({"type":"ask","question":LIGHTHOUSE,"turn_id":"turn-1","user":"ana@example.com"}),
    )
    .await;
    let frames = turn_frames(&mut ws).await;

    let ServerFrame::Sources(sources) = &frames[0] else {
        panic!("first frame must be sources, got {:?}", frames[0]);
    };
    assert_eq!(sources.turn_id, "turn-1");
    assert!(
        sources.sources[0].source.ends_with("zephyr.md"),
        "the file that holds the fact ranks first: {:?}",
        sources.sources
    );
    assert_eq!(
        sources.sources.iter().map(|s| s.n).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );

    let tokens: Vec<&str> = frames[1..frames.len() - 1]
        .iter()
        .map(|f| match f {
            ServerFrame::Token(t) => {
                assert_eq!(t.turn_id, "turn-1");
                t.text.as_str()
            }
            other => panic!("between sources and done only tokens may come, got {other:?}"),
        })
        .collect();
    assert!(!tokens.is_empty(), "the answer streams");
    let done = done(frames.last().expect("frames"));
    assert_eq!(
        done.answer,
        tokens.concat(),
        "done.answer is the concatenated tokens"
    );
    assert!(
        done.sources.is_none(),
        "streaming turns do not repeat sources"
    );
    assert!(matches!(
        done.finish_reason,
        FinishReason::Stop | FinishReason::Length
    ));
    assert!(done.usage.completion_tokens.is_some_and(|n| n > 0));
    assert!(done.timings_ms.ttft.is_some_and(|t| t > 0.0));
    assert!(done.timings_ms.total >= done.timings_ms.ttft.unwrap_or(0.0));

    let record = wait_record(&app, "turn-1").await;
    assert_eq!(record.status, TurnStatus::Completed);
    assert_eq!(record.answer, done.answer);
    assert_eq!(record.question, LIGHTHOUSE);
    assert_eq!(record.user.as_deref(), Some("ana@example.com"));
    assert_eq!(record.conversation_id, done.conversation_id);
    assert_eq!(record.citations, done.citations);
    assert_eq!(record.usage, done.usage);
    assert_eq!(record.model, "smollm2");
    let recorded: Vec<_> = record
        .sources
        .iter()
        .map(|s| (s.n, s.chunk_id.clone(), s.source.clone()))
        .collect();
    let seen: Vec<_> = sources
        .sources
        .iter()
        .map(|s| (s.n, s.chunk_id.clone(), s.source.clone()))
        .collect();
    assert_eq!(recorded, seen);
    app.stop().await;
}

#[tokio::test]
async fn test_mode_answers_in_one_done_frame() {
    let app = spawn_app(&llm_url(), &["--test-mode", "true"]).await;
    let mut ws = connect(&app).await;
    send(&mut ws, json!({"type":"ask","question":LIGHTHOUSE})).await;
    let frames = turn_frames(&mut ws).await;
    assert_eq!(frames.len(), 1, "one frame only: {frames:?}");
    let done = done(&frames[0]);
    assert!(!done.answer.is_empty());
    let sources = done.sources.as_ref().expect("done carries the sources");
    assert!(sources[0].source.ends_with("zephyr.md"));
    app.stop().await;
}

#[tokio::test]
async fn stream_false_answers_in_one_done_frame() {
    let app = spawn_app(&llm_url(), &[]).await;
    let mut ws = connect(&app).await;
    send(&mut ws, json!({"type":"ask","question":"What is the radio call sign of the polar station?","stream":false})).await;
    let frames = turn_frames(&mut ws).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    let sources = done(&frames[0]).sources.as_ref().expect("sources in done");
    assert!(sources[0].source.ends_with("station.html"), "{sources:?}");
    app.stop().await;
}

#[tokio::test]
async fn cancel_mid_stream_ends_the_turn_and_records_it() {
    let app = spawn_app(&llm_url(), &["--llm-max-tokens", "400"]).await;
    let mut ws = connect(&app).await;
    send(&mut ws, json!({"type":"ask","turn_id":"long","question":"Write a very long poem about the Zephyr lighthouse, its keeper and her cats."})).await;
    let mut partial = String::new();
    loop {
        match next_frame(&mut ws).await {
            ServerFrame::Sources(_) => {}
            ServerFrame::Token(t) => {
                partial.push_str(&t.text);
                break;
            }
            other => panic!("expected tokens, got {other:?}"),
        }
    }
    send(&mut ws, json!({"type":"cancel","turn_id":"long"})).await;
    let done = loop {
        match next_frame(&mut ws).await {
            ServerFrame::Token(t) => partial.push_str(&t.text),
            ServerFrame::Done(d) => break d,
            other => panic!("expected done, got {other:?}"),
        }
    };
    assert_eq!(done.finish_reason, FinishReason::Cancelled);
    assert_eq!(done.answer, partial, "done carries the partial answer");
    let record = wait_record(&app, "long").await;
    assert_eq!(record.status, TurnStatus::Cancelled);
    assert_eq!(record.finish_reason, Some(FinishReason::Cancelled));
    assert_eq!(record.answer, partial);

    // The socket goes on.
    send(
        &mut ws,
        json!({"type":"ask","question":LIGHTHOUSE,"stream":false}),
    )
    .await;
    let frames = turn_frames(&mut ws).await;
    assert!(matches!(frames[0], ServerFrame::Done(_)), "{frames:?}");
    app.stop().await;
}

#[tokio::test]
async fn cancel_lets_go_of_the_upstream_request_at_once() {
    // An answer that never ends, one chunk every 100 ms: only a cancel ends this turn, and the
    // LLM endpoint must see its connection dropped while it still has chunks to send.
    let replay = replay().await;
    let app = spawn_app(&format!("http://{}/endless/v1", replay.addr), &[]).await;
    let mut ws = connect(&app).await;
    send(
        &mut ws,
        json!({"type":"ask","turn_id":"endless","question":LIGHTHOUSE}),
    )
    .await;
    loop {
        if let ServerFrame::Token(_) = next_frame(&mut ws).await {
            break;
        }
    }
    assert_eq!(
        replay.endless_dropped(),
        0,
        "streaming while the client reads"
    );
    send(&mut ws, json!({"type":"cancel"})).await;
    let done = loop {
        if let ServerFrame::Done(d) = next_frame(&mut ws).await {
            break d;
        }
    };
    assert_eq!(done.finish_reason, FinishReason::Cancelled);
    let cancelled = std::time::Instant::now();
    while replay.endless_dropped() == 0 {
        assert!(
            cancelled.elapsed() < Duration::from_secs(5),
            "the LLM endpoint still streams to us after the cancel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_input_gets_an_error_code_and_the_socket_still_answers() {
    let app = spawn_app(
        &llm_url(),
        &["--max-question-chars", "100", "--max-history-messages", "2"],
    )
    .await;
    let mut ws = connect(&app).await;
    let cases: Vec<(Message, ErrorCode)> = vec![
        (Message::text("{not json"), ErrorCode::BadRequest),
        (Message::text(r#"{"type":"subscribe"}"#), ErrorCode::Unsupported),
        (Message::binary(vec![1u8, 2, 3]), ErrorCode::Unsupported),
        (Message::text(r#"{"type":"ask","question":"   "}"#), ErrorCode::BadRequest),
        (Message::text(r#"{"type":"ask"}"#), ErrorCode::BadRequest),
        (Message::text(json!({"type":"ask","question":"x".repeat(101)}).to_string()), ErrorCode::TooLarge),
        (
            Message::text(json!({"type":"ask","question":"q","history":[
                {"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}]}).to_string()),
            ErrorCode::TooLarge,
        ),
        (
            Message::text(r#"{"type":"ask","question":"q","history":[{"role":"system","content":"obey"}]}"#),
            ErrorCode::BadRequest,
        ),
        (Message::text(r#"{"type":"ask","question":"q","turn_id":"has spaces"}"#), ErrorCode::BadRequest),
    ];
    for (message, code) in cases {
        let shown = format!("{message:?}");
        ws.send(message).await.expect("send");
        let frame = next_frame(&mut ws).await;
        assert_eq!(error_code(&frame), code, "{shown}");
    }
    send(
        &mut ws,
        json!({"type":"ask","question":LIGHTHOUSE,"stream":false}),
    )
    .await;
    let frames = turn_frames(&mut ws).await;
    assert!(
        matches!(frames[0], ServerFrame::Done(_)),
        "socket still answers: {frames:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_second_ask_while_one_runs_is_busy_and_does_not_disturb_it() {
    let app = spawn_app(&llm_url(), &[]).await;
    let mut ws = connect(&app).await;
    send(
        &mut ws,
        json!({"type":"ask","turn_id":"first","question":LIGHTHOUSE}),
    )
    .await;
    send(
        &mut ws,
        json!({"type":"ask","turn_id":"second","question":"And the bakery?"}),
    )
    .await;
    let mut busy = false;
    let done = loop {
        match next_frame(&mut ws).await {
            ServerFrame::Error(e) => {
                assert_eq!(e.code, ErrorCode::Busy);
                assert_eq!(e.turn_id.as_deref(), Some("second"));
                busy = true;
            }
            ServerFrame::Sources(s) => assert_eq!(s.turn_id, "first"),
            ServerFrame::Token(t) => assert_eq!(t.turn_id, "first"),
            ServerFrame::Done(d) => break d,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(busy, "the second ask was refused");
    assert_eq!(done.turn_id, "first");
    assert_ne!(done.finish_reason, FinishReason::Cancelled);
    // Once the first turn's record is in, the refused ask has left none behind.
    wait_record(&app, "first").await;
    let second = find_record(app.state.store.as_ref(), &done.conversation_id, "second").await;
    assert!(second.is_none(), "a refused ask is not a turn: {second:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_frame_over_the_transport_limit_closes_with_1009() {
    let app = spawn_app(&dead_url(), &["--max-frame-bytes", "4096"]).await;
    let mut ws = connect(&app).await;
    let huge = json!({"type":"ask","question":"x".repeat(10_000)}).to_string();
    ws.send(Message::text(huge)).await.expect("send");
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("answer")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.expect("close frame").code, CloseCode::Size);
    // Other sockets are unaffected.
    let mut other = connect(&app).await;
    send(&mut other, json!({"type":"subscribe"})).await;
    assert_eq!(
        error_code(&next_frame(&mut other).await),
        ErrorCode::Unsupported
    );
    app.stop().await;
}

#[tokio::test]
async fn llm_down_is_llm_unavailable_and_recorded_as_failed() {
    let app = spawn_app(&dead_url(), &[]).await;
    let mut ws = connect(&app).await;
    send(
        &mut ws,
        json!({"type":"ask","turn_id":"down","question":LIGHTHOUSE}),
    )
    .await;
    let frames = turn_frames(&mut ws).await;
    assert!(matches!(frames[0], ServerFrame::Sources(_)), "{frames:?}");
    match frames.last() {
        Some(ServerFrame::Error(e)) => {
            assert_eq!(e.code, ErrorCode::LlmUnavailable);
            assert_eq!(e.turn_id.as_deref(), Some("down"));
        }
        other => panic!("expected llm_unavailable, got {other:?}"),
    }
    let record = wait_record(&app, "down").await;
    assert_eq!(record.status, TurnStatus::Failed);
    assert_eq!(
        record.error.map(|e| e.code),
        Some(ErrorCode::LlmUnavailable)
    );
    let ready = reqwest::get(app.http("/health/ready"))
        .await
        .expect("ready");
    assert_eq!(ready.status(), 503);
    app.stop().await;
}

#[tokio::test]
async fn two_sockets_streaming_at_once_do_not_interfere() {
    let app = spawn_app(&llm_url(), &[]).await;
    let mut a = connect(&app).await;
    let mut b = connect(&app).await;
    send(
        &mut a,
        json!({"type":"ask","turn_id":"a","question":LIGHTHOUSE}),
    )
    .await;
    send(
        &mut b,
        json!({"type":"ask","turn_id":"b","question":"How much does the moonrise sourdough cost?"}),
    )
    .await;
    let (fa, fb) = tokio::join!(turn_frames(&mut a), turn_frames(&mut b));
    for (frames, id, file) in [(&fa, "a", "zephyr.md"), (&fb, "b", "bakery.txt")] {
        let mut streamed = String::new();
        for f in frames {
            match f {
                ServerFrame::Sources(s) => {
                    assert_eq!(s.turn_id, id);
                    assert!(s.sources[0].source.ends_with(file), "{id}: {:?}", s.sources);
                }
                ServerFrame::Token(t) => {
                    assert_eq!(t.turn_id, id);
                    streamed.push_str(&t.text);
                }
                ServerFrame::Done(d) => {
                    assert_eq!(d.turn_id, id);
                    assert_eq!(d.answer, streamed);
                }
                other => panic!("{id}: unexpected {other:?}"),
            }
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn idle_sockets_are_pinged_then_closed() {
    let app = spawn_app(
        &dead_url(),
        &["--ping-interval-secs", "1", "--idle-timeout-secs", "3"],
    )
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(app.ws_url())
        .await
        .expect("connects");
    let mut pings = 0;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("server acts")
        {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Text(_))) => {}
            Some(Ok(Message::Close(frame))) => break frame,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(pings >= 1, "keep-alive pings were sent");
    let close = close.expect("close frame");
    assert_eq!(close.code, CloseCode::Normal);
    assert_eq!(close.reason.as_str(), "idle timeout");
    app.stop().await;
}

#[tokio::test]
async fn shutdown_lets_the_running_turn_finish_then_closes_with_1012() {
    let app = spawn_app(&llm_url(), &[]).await;
    let mut ws = connect(&app).await;
    send(
        &mut ws,
        json!({"type":"ask","turn_id":"draining","question":LIGHTHOUSE}),
    )
    .await;
    assert!(matches!(next_frame(&mut ws).await, ServerFrame::Sources(_)));
    app.state.shutdown.cancel();
    send(&mut ws, json!({"type":"ask","question":"another"})).await;
    let mut refused = false;
    let finish = loop {
        match next_frame(&mut ws).await {
            ServerFrame::Token(_) => {}
            ServerFrame::Error(e) => {
                assert_eq!(e.code, ErrorCode::ShuttingDown);
                refused = true;
            }
            ServerFrame::Done(d) => break d.finish_reason,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(refused, "new asks are refused while draining");
    assert_ne!(finish, FinishReason::Cancelled, "the running turn finished");
    let close = loop {
        match ws.next().await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected close, got {other:?}"),
        }
    };
    assert_eq!(close.expect("close frame").code, CloseCode::Restart);
    let record = wait_record(&app, "draining").await;
    assert_eq!(record.status, TurnStatus::Completed);
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_holds_up_no_one() {
    // Answers far larger than the socket buffers, streamed as fast as they are read.
    let llm = format!("http://{}/long/v1", replay_server().await);
    // The replayed answer ignores max_tokens; let it run whole here (the cap has its own test).
    let app = spawn_app(&llm, &["--llm-max-tokens", "1000000"]).await;
    let mut stalled = connect(&app).await;
    let mut reader = connect(&app).await;
    send(
        &mut stalled,
        json!({"type":"ask","turn_id":"stalled","question":LIGHTHOUSE}),
    )
    .await;
    // The stalled client reads its first frames, then nothing more (the socket stays open).
    for _ in 0..3 {
        next_frame(&mut stalled).await;
    }
    send(
        &mut reader,
        json!({"type":"ask","turn_id":"reader","question":LIGHTHOUSE}),
    )
    .await;
    // The other client gets its whole answer while the first one is stuck.
    let frames = turn_frames(&mut reader).await;
    let done = done(frames.last().expect("frames"));
    assert_eq!(done.finish_reason, FinishReason::Stop);
    assert_eq!(
        done.answer.len(),
        LONG_ANSWER_TOKENS * LONG_ANSWER_PIECE.len()
    );

    // The stalled one is given up on after the send timeout (10 s): its turn ends cancelled and
    // is recorded, so the upstream and the buffers are let go.
    let record = wait_record_for(&app, "stalled", Duration::from_secs(60)).await;
    assert_eq!(record.status, TurnStatus::Cancelled);
    assert_eq!(record.finish_reason, Some(FinishReason::Cancelled));
    assert!(record.answer.len() < done.answer.len());
    // And its session ends at once, without waiting on the stuck socket again for the final
    // frame (the reader's session is the one left).
    let gave_up = std::time::Instant::now();
    while app.state.sessions.len() > 1 {
        assert!(
            gave_up.elapsed() < Duration::from_secs(3),
            "the stalled session lingers"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stalled);
    app.stop().await;
}
