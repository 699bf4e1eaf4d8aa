//! Contract tests of the chat-model client on recorded llama-server transcripts (and faults
//! built from them), served over real HTTP.

use futures::StreamExt;
use ragchat::error::{ApiError, ErrorCode};
use ragchat::llm::{ChatEvent, ChatMessage, ChatModel, LlmError, OpenAiChat};

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
async fn collect(model: &OpenAiChat) -> (Vec<ChatEvent>, Option<LlmError>) {
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

fn text(events: &[ChatEvent]) -> String {
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
    assert_eq!(events.last(), Some(&ChatEvent::Finish("stop".into())));
    assert!(!events.iter().any(|e| matches!(e, ChatEvent::Usage { .. })));
}

#[tokio::test]
async fn usage_in_an_empty_choices_chunk_and_length_finish() {
    let (events, error) = collect(&client("usage-length", &[]).await).await;
    assert_eq!(error, None);
    assert!(text(&events).starts_with("In the depths of the ocean,"));
    assert!(events.contains(&ChatEvent::Finish("length".into())));
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
        ("error-in-stream", ErrorCode::LlmUnavailable),
        ("cut", ErrorCode::LlmUnavailable),
    ];
    for (scenario, code) in cases {
        let (events, error) = collect(&client(scenario, &[]).await).await;
        // A cut stream ends without an error item; the turn notices the missing finish reason.
        let api: ApiError = match (scenario, error) {
            ("cut", None) => {
                assert!(!events.iter().any(|e| matches!(e, ChatEvent::Finish(_))));
                continue;
            }
            (_, Some(e)) => e.into(),
            (_, None) => panic!("{scenario}: expected an error, got {events:?}"),
        };
        assert_eq!(api.code, code, "{scenario}: {api}");
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
    assert!(events.is_empty() || !text(&events).is_empty());
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
    assert_eq!(events.last(), Some(&ChatEvent::Finish("stop".into())));
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
