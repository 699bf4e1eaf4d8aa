//! Contract tests of the chat-model client on recorded llama-server transcripts (and faults
//! built from them), served over real HTTP.

use ragchat::error::{ApiError, ErrorCode};
use ragchat::llm::{ChatEvent, ChatMessage, ChatModel, LlmError, OpenAiChat};
use ragchat::turn::FinishReason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{config, dead_url, replay_server};

async fn client(scenario: &str, extra: &[&str]) -> OpenAiChat {
    let addr = replay_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("http://{addr}/{scenario}/v1");
    OpenAiChat::new(&config(dir.path(), &url, extra).llm).expect("client")
}

fn question() -> Vec<ChatMessage> {
    vec![ChatMessage {
        role: "user",
        content: "What is the capital of France?".into(),
    }]
}

/// Every event until the stream ends, or the error that ended it.
pub async fn collect(model: &OpenAiChat) -> (Vec<ChatEvent>, Option<LlmError>) {
    let mut stream = match model.stream(question()).await {
        Ok(s) => s,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(e) => events.push(e),
            Err(e) => return (events, Some(e)),
        }
    }
    (events, None)
}

pub fn text(events: &[ChatEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            ChatEvent::Token(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn basic_stream_with_null_content_and_timings() {
    let (events, error) = collect(&client("basic", &[]).await).await;
    assert_eq!(error, None);
    assert_eq!(text(&events), "The capital of France is Paris.");
    assert_eq!(events.last(), Some(&ChatEvent::Finish(FinishReason::Stop)));
    assert!(!events.iter().any(|e| matches!(e, ChatEvent::Usage { .. })));
}

#[tokio::test]
async fn usage_in_an_empty_choices_chunk_and_length_finish() {
    let (events, error) = collect(&client("usage-length", &[]).await).await;
    assert_eq!(error, None);
    assert!(text(&events).starts_with("In the depths of the ocean,"));
    assert!(events.contains(&ChatEvent::Finish(FinishReason::Length)));
    assert_eq!(
        events.last(),
        Some(&ChatEvent::Usage {
            prompt_tokens: Some(38),
            completion_tokens: Some(12)
        })
    );
}

#[tokio::test]
async fn usage_on_the_finish_chunk() {
    let (events, error) = collect(&client("usage-on-finish", &[]).await).await;
    assert_eq!(error, None);
    assert!(events.contains(&ChatEvent::Usage {
        prompt_tokens: Some(49),
        completion_tokens: Some(8)
    }));
}

#[tokio::test]
async fn upstream_errors_map_to_client_codes() {
    let cases = [
        ("bad-request", ErrorCode::LlmError),
        ("overflow", ErrorCode::TooLarge),
        ("rate-limited", ErrorCode::Busy),
        ("unavailable", ErrorCode::LlmUnavailable),
        ("no-slot", ErrorCode::Busy),
        ("error-in-stream", ErrorCode::LlmUnavailable),
        ("cut", ErrorCode::LlmUnavailable),
    ];
    for (scenario, code) in cases {
        let (events, error) = collect(&client(scenario, &[]).await).await;
        let Some(error) = error else {
            panic!("{scenario}: expected an error, got {events:?}");
        };
        let api: ApiError = error.into();
        assert_eq!(api.code, code, "{scenario}: {api}");
    }
}

#[tokio::test]
async fn a_stream_cut_off_before_its_finish_reason_is_an_error_after_its_tokens() {
    let (events, error) = collect(&client("cut", &[]).await).await;
    assert_eq!(text(&events), "The capital of", "the tokens before the cut");
    match error {
        Some(LlmError::Unavailable(m)) => assert!(m.contains("cut off"), "{m}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn rate_limit_carries_the_retry_hint() {
    let (_, error) = collect(&client("rate-limited", &[]).await).await;
    let api: ApiError = error.expect("rate limited").into();
    assert_eq!(api.code, ErrorCode::Busy);
    assert_eq!(api.retry_after_ms, Some(1500));
}

#[tokio::test]
async fn a_stalled_stream_times_out_instead_of_hanging() {
    let model = client("stall", &["--llm-stall-timeout-secs", "1"]).await;
    let started = std::time::Instant::now();
    let (events, error) = collect(&model).await;
    assert!(matches!(error, Some(LlmError::Unavailable(_))), "{error:?}");
    assert_eq!(text(&events), "The", "what came before the stall is kept");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn a_slow_stream_is_not_a_stall() {
    // The stall timeout is per chunk, not per answer: chunks 300 ms apart for several seconds
    // with a 1 s timeout make a whole answer.
    let model = client("slow", &["--llm-stall-timeout-secs", "1"]).await;
    let started = std::time::Instant::now();
    let (events, error) = collect(&model).await;
    assert_eq!(error, None);
    assert!(started.elapsed() > std::time::Duration::from_secs(2));
    assert_eq!(text(&events), "The capital of France is Paris.");
    assert_eq!(events.last(), Some(&ChatEvent::Finish(FinishReason::Stop)));
}

#[tokio::test]
async fn heartbeats_do_not_keep_a_stalled_answer_alive() {
    let model = client("heartbeats", &["--llm-stall-timeout-secs", "1"]).await;
    let (_, error) = tokio::time::timeout(std::time::Duration::from_secs(10), collect(&model))
        .await
        .expect("the stall timeout ends the answer, heartbeats or not");
    assert!(matches!(error, Some(LlmError::Unavailable(_))), "{error:?}");
}

#[tokio::test]
async fn connection_refused_is_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = OpenAiChat::new(&config(dir.path(), &dead_url(), &[]).llm).expect("client");
    let (_, error) = collect(&model).await;
    let api: ApiError = error.expect("refused").into();
    assert_eq!(api.code, ErrorCode::LlmUnavailable);
    assert!(model.ping().await.is_err());
}

/// Reads one whole HTTP request (headers and a `content-length` body) from `socket`.
async fn read_request(socket: &mut tokio::net::TcpStream) {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await.expect("read");
        assert!(n > 0, "the client closed before sending a whole request");
        request.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&request);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if request.len() >= end + 4 + length {
                return;
            }
        }
    }
}

#[tokio::test]
async fn a_connection_closed_before_any_response_is_sent_again_once() {
    // What llama-server and uvicorn do to a kept-alive connection idle for 5 s, just as a request
    // goes out on it: the request is read, then the connection closes without an answer. The
    // next connection gets the recorded answer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let answer = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/llama-server/stream-basic.sse"),
    )
    .expect("fixture");
    let server = tokio::spawn(async move {
        let (mut first, _) = listener.accept().await.expect("accept");
        read_request(&mut first).await;
        drop(first);
        let (mut second, _) = listener.accept().await.expect("accept");
        read_request(&mut second).await;
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
        second.write_all(head.as_bytes()).await.expect("write");
        second.write_all(answer.as_bytes()).await.expect("write");
        second.shutdown().await.expect("shutdown");
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("http://{addr}/v1");
    let model = OpenAiChat::new(&config(dir.path(), &url, &[]).llm).expect("client");
    let (events, error) = collect(&model).await;
    assert_eq!(error, None);
    assert_eq!(text(&events), "The capital of France is Paris.");
    server.abort();
}

#[tokio::test]
async fn a_connection_closed_twice_is_unavailable_and_says_why() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&requests);
    let server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            read_request(&mut socket).await;
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("http://{addr}/v1");
    let model = OpenAiChat::new(&config(dir.path(), &url, &[]).llm).expect("client");
    let (_, error) = collect(&model).await;
    let Some(LlmError::Unavailable(message)) = error else {
        panic!("expected unavailable, got {error:?}");
    };
    assert!(
        message.contains("closed"),
        "the cause is in the message: {message}"
    );
    assert_eq!(
        requests.load(Ordering::SeqCst),
        2,
        "sent once, then once more"
    );
    server.abort();
}
