//! Contract tests of the chat and embeddings clients against every hosted dialect: OpenAI, Azure
//! OpenAI, Ollama, vLLM (and llama-server's embeddings), replayed over real HTTP from
//! `tests/fixtures/dialects/` (each fixture names the reference it was written from). The server
//! also plays each provider's gatekeeper: a wrong path, a missing `api-version` or a wrong key
//! gets that provider's own refusal, so a client that builds the request wrong cannot pass.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use ragchat::chat::protocol::{FinishReason, ServerFrame};
use ragchat::config::EmbedBackend;
use ragchat::embed::{Embedder, OpenAiEmbedder};
use ragchat::error::{ApiError, ErrorCode};
use ragchat::llm::{ChatEvent, LlmError, OpenAiChat};
use ragchat::store::TurnStatus;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::llm_contract::{collect, text};
use crate::support::{config, connect, send, serve_router, spawn_app, turn_frames, wait_record};

const OPENAI_KEY: &str = "sk-test-0123456789";
const AZURE_KEY: &str = "0123456789abcdef0123456789abcdef";
const API_VERSION: &str = "2024-10-21";

/// A request as the provider saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Value,
}

struct Provider {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Provider {
    fn last(&self) -> Seen {
        self.seen
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("a request reached the provider")
    }
}

/// A fixture without its `#` header lines (JSON files) — SSE comment lines stay: clients must
/// skip them.
fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dialects")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn sse(name: &str) -> Response {
    ([("content-type", "text/event-stream")], fixture(name)).into_response()
}

fn json_file(status: StatusCode, name: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        fixture(name),
    )
        .into_response()
}

/// Serves every dialect under its own prefix: `/openai/v1`, `/ollama/v1`, `/vllm/v1`,
/// `/llama/v1` and an Azure resource at `/azure` (deployments `gpt-4o-mini`, `filtered`,
/// `prompt-filtered`, `embed`).
async fn provider() -> Provider {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let log = Arc::clone(&log);
        async move {
            let path = uri.path().to_owned();
            log.lock().expect("lock").push(Seen {
                path: path.clone(),
                query: uri.query().map(str::to_owned),
                headers: headers.clone(),
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            });
            if method != Method::POST {
                return StatusCode::NOT_FOUND.into_response();
            }
            let bearer = |key: &str| {
                headers
                    .get("authorization")
                    .is_some_and(|v| v == format!("Bearer {key}").as_str())
            };
            if let Some(rest) = path.strip_prefix("/azure/openai/deployments/") {
                // Azure: no api-version is a 404, a wrong api-key a 401 (its own body).
                let versioned = uri.query().is_some_and(|q| {
                    q.split('&')
                        .any(|p| p == format!("api-version={API_VERSION}"))
                });
                if !versioned {
                    return (
                        StatusCode::NOT_FOUND,
                        r#"{"error":{"code":"404","message":"Resource not found"}}"#,
                    )
                        .into_response();
                }
                if headers.get("api-key").is_none_or(|k| k != AZURE_KEY) {
                    return json_file(StatusCode::UNAUTHORIZED, "azure-unauthorized.json");
                }
                return match rest {
                    "gpt-4o-mini/chat/completions" => sse("azure-stream.sse"),
                    "filtered/chat/completions" => sse("azure-content-filter.sse"),
                    "prompt-filtered/chat/completions" => {
                        json_file(StatusCode::BAD_REQUEST, "azure-prompt-filtered.json")
                    }
                    "embed/embeddings" => json_file(StatusCode::OK, "azure-embeddings.json"),
                    _ => (
                        StatusCode::NOT_FOUND,
                        r#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}"#,
                    )
                        .into_response(),
                };
            }
            match path.as_str() {
                "/openai/v1/chat/completions" | "/openai/v1/embeddings" if !bearer(OPENAI_KEY) => {
                    (
                        StatusCode::UNAUTHORIZED,
                        r#"{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
                    )
                        .into_response()
                }
                "/openai/v1/chat/completions" => sse("openai-stream.sse"),
                "/openai/v1/embeddings" => json_file(StatusCode::OK, "openai-embeddings.json"),
                "/ollama/v1/chat/completions" => sse("ollama-stream.sse"),
                "/vllm/v1/chat/completions" => sse("vllm-stream.sse"),
                "/llama/v1/embeddings" => json_file(StatusCode::OK, "llama-server-embeddings.json"),
                _ => StatusCode::NOT_FOUND.into_response(),
            }
        }
    };
    let addr = serve_router(axum::Router::new().fallback(handler)).await;
    Provider { addr, seen }
}

fn chat_client(url: &str, extra: &[&str]) -> OpenAiChat {
    let dir = tempfile::tempdir().expect("tempdir");
    OpenAiChat::new(&config(dir.path(), url, extra).llm).expect("client")
}

fn azure_args<'a>(deployment: &'a str, key: &'a str) -> [&'a str; 6] {
    [
        "--llm-provider",
        "azure",
        "--llm-azure-deployment",
        deployment,
        "--llm-api-key",
        key,
    ]
}

fn finish(events: &[ChatEvent]) -> Option<FinishReason> {
    events.iter().find_map(|e| match e {
        ChatEvent::Finish(r) => Some(*r),
        _ => None,
    })
}

fn usage(events: &[ChatEvent]) -> Option<(Option<u32>, Option<u32>)> {
    events.iter().rev().find_map(|e| match e {
        ChatEvent::Usage {
            prompt_tokens,
            completion_tokens,
        } => Some((*prompt_tokens, *completion_tokens)),
        _ => None,
    })
}

/// What every dialect's request must carry: a stream with usage, our model and messages.
fn assert_streaming_request(seen: &Seen) {
    assert_eq!(seen.body["stream"], true, "{:?}", seen.body);
    assert_eq!(seen.body["stream_options"]["include_usage"], true);
    assert_eq!(seen.body["messages"][0]["role"], "user");
    assert!(seen.body["max_tokens"].is_u64());
}

#[tokio::test]
async fn openai_streams_with_usage_and_a_bearer_key() {
    let p = provider().await;
    let url = format!("http://{}/openai/v1", p.addr);
    let model = chat_client(
        &url,
        &["--llm-api-key", OPENAI_KEY, "--llm-model", "gpt-4o-mini"],
    );
    let (events, error) = collect(&model).await;
    assert_eq!(error, None);
    assert_eq!(text(&events), "The capital of France is Paris [1].");
    assert_eq!(finish(&events), Some(FinishReason::Stop));
    assert_eq!(usage(&events), Some((Some(412), Some(8))));
    let seen = p.last();
    assert_eq!(seen.path, "/openai/v1/chat/completions");
    assert_eq!(seen.body["model"], "gpt-4o-mini");
    assert_streaming_request(&seen);

    // A wrong key is OpenAI's 401: the client's `llm_error`, the key never in the message.
    let wrong = chat_client(&url, &["--llm-api-key", "sk-wrong"]);
    let (_, error) = collect(&wrong).await;
    let api: ApiError = error.expect("refused").into();
    assert_eq!(api.code, ErrorCode::LlmError);
    assert!(!api.message.contains("sk-"), "{}", api.message);
}

#[tokio::test]
async fn azure_streams_past_its_filter_chunks_with_its_url_query_and_key_header() {
    let p = provider().await;
    let url = format!("http://{}/azure", p.addr);
    let model = chat_client(&url, &azure_args("gpt-4o-mini", AZURE_KEY));
    let (events, error) = collect(&model).await;
    assert_eq!(
        error, None,
        "the empty-choices filter chunk is not an error"
    );
    assert_eq!(text(&events), "The capital of France is Paris [1].");
    assert_eq!(finish(&events), Some(FinishReason::Stop));
    assert_eq!(usage(&events), Some((Some(412), Some(8))));
    let seen = p.last();
    assert_eq!(
        seen.path,
        "/azure/openai/deployments/gpt-4o-mini/chat/completions"
    );
    assert_eq!(
        seen.query.as_deref(),
        Some(format!("api-version={API_VERSION}").as_str())
    );
    assert_eq!(seen.headers["api-key"], AZURE_KEY);
    assert!(
        seen.headers.get("authorization").is_none(),
        "Azure's key goes in api-key, not a bearer token"
    );
    assert_streaming_request(&seen);

    let wrong = chat_client(&url, &azure_args("gpt-4o-mini", "not-the-key"));
    let (_, error) = collect(&wrong).await;
    let api: ApiError = error.expect("refused").into();
    assert_eq!(api.code, ErrorCode::LlmError);
    let missing = chat_client(&url, &azure_args("no-such-deployment", AZURE_KEY));
    let (_, error) = collect(&missing).await;
    assert!(matches!(error, Some(LlmError::Rejected(_))), "{error:?}");
}

#[tokio::test]
async fn azure_content_filter_ends_the_answer_with_its_own_finish_reason() {
    let p = provider().await;
    let url = format!("http://{}/azure", p.addr);
    let (events, error) = collect(&chat_client(&url, &azure_args("filtered", AZURE_KEY))).await;
    assert_eq!(error, None);
    assert_eq!(
        text(&events),
        "The siege ended",
        "what came before the filter"
    );
    assert_eq!(finish(&events), Some(FinishReason::ContentFilter));

    // A prompt the filter refuses is a 400 with code content_filter: its own error code.
    let (events, error) = collect(&chat_client(
        &url,
        &azure_args("prompt-filtered", AZURE_KEY),
    ))
    .await;
    assert!(events.is_empty());
    let api: ApiError = error.expect("refused").into();
    assert_eq!(api.code, ErrorCode::ContentFilter);
    assert!(api.message.contains("content filter"), "{}", api.message);
}

#[tokio::test]
async fn ollama_streams_with_a_role_in_every_delta() {
    let p = provider().await;
    let model = chat_client(
        &format!("http://{}/ollama/v1", p.addr),
        &["--llm-model", "llama3.2"],
    );
    let (events, error) = collect(&model).await;
    assert_eq!(error, None);
    assert_eq!(text(&events), "The capital of France is Paris [1].");
    assert_eq!(finish(&events), Some(FinishReason::Stop));
    assert_eq!(usage(&events), Some((Some(398), Some(9))));
    assert_eq!(p.last().body["model"], "llama3.2");
}

#[tokio::test]
async fn vllm_streams_text_on_its_length_finish_chunk() {
    let p = provider().await;
    let model = chat_client(&format!("http://{}/vllm/v1", p.addr), &[]);
    let (events, error) = collect(&model).await;
    assert_eq!(error, None);
    assert_eq!(
        text(&events),
        "The capital of France is Paris",
        "the finish chunk's own text is kept"
    );
    assert_eq!(finish(&events), Some(FinishReason::Length));
    assert_eq!(usage(&events), Some((Some(401), Some(6))));
}

#[tokio::test]
async fn a_content_filtered_turn_says_so_in_done_and_in_its_record() {
    let p = provider().await;
    let url = format!("http://{}/azure", p.addr);
    let app = spawn_app(&url, &azure_args("filtered", AZURE_KEY)).await;
    let mut ws = connect(&app).await;
    send(
        &mut ws,
        json!({"type":"ask","question":"How did the siege of Saltmere end?","turn_id":"cf-1"}),
    )
    .await;
    let frames = turn_frames(&mut ws).await;
    let Some(ServerFrame::Done(done)) = frames.last() else {
        panic!("expected done, got {frames:?}");
    };
    assert_eq!(done.finish_reason, FinishReason::ContentFilter);
    assert_eq!(done.answer, "The siege ended");
    let record = wait_record(&app, "cf-1").await;
    assert_eq!(record.finish_reason, Some(FinishReason::ContentFilter));
    assert_eq!(record.status, TurnStatus::Completed);
    assert_eq!(record.answer, "The siege ended");
    app.stop().await;
}

fn embed_backend(url: String, key: Option<&str>) -> EmbedBackend {
    EmbedBackend::OpenAi {
        url,
        api_key: key.map(|k| SecretString::from(k.to_owned())),
        model: "text-embedding-3-small".into(),
    }
}

/// The fixture's vectors in input order, scaled to unit length.
fn expected(name: &str) -> Vec<Vec<f32>> {
    let body: Value = serde_json::from_str(&fixture(name)).expect("json");
    let mut data: Vec<(u64, Vec<f32>)> = body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| {
            let v: Vec<f32> = serde_json::from_value(d["embedding"].clone()).expect("vector");
            (d["index"].as_u64().expect("index"), v)
        })
        .collect();
    data.sort_by_key(|(i, _)| *i);
    data.into_iter()
        .map(|(_, v)| {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect()
}

fn assert_vectors(got: &[Vec<f32>], want: &[Vec<f32>]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len());
        for (a, b) in g.iter().zip(w) {
            assert!((a - b).abs() < 1e-6, "{g:?} vs {w:?}");
        }
        let norm = g.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "unit length: {norm}");
    }
}

fn two_texts() -> Vec<String> {
    vec!["first text".into(), "second text".into()]
}

#[tokio::test]
async fn embeddings_in_openai_azure_and_llama_server_shapes() {
    let p = provider().await;

    let openai = OpenAiEmbedder::new(&embed_backend(
        format!("http://{}/openai/v1", p.addr),
        Some(OPENAI_KEY),
    ))
    .expect("client");
    let got = openai.embed(two_texts()).await.expect("embeds");
    assert_vectors(&got, &expected("openai-embeddings.json"));
    let seen = p.last();
    assert_eq!(seen.path, "/openai/v1/embeddings");
    assert_eq!(seen.body["model"], "text-embedding-3-small");
    assert_eq!(seen.body["input"], json!(two_texts()));
    assert_eq!(openai.describe(), "openai:text-embedding-3-small");

    let azure = OpenAiEmbedder::new(&EmbedBackend::Azure {
        url: format!("http://{}/azure", p.addr),
        api_key: Some(SecretString::from(AZURE_KEY.to_owned())),
        deployment: "embed".into(),
        api_version: API_VERSION.into(),
    })
    .expect("client");
    let got = azure.embed(two_texts()).await.expect("embeds");
    assert_vectors(&got, &expected("azure-embeddings.json"));
    assert!(
        got[0][0] > 0.0,
        "answered out of order: the vector with index 0 comes first"
    );
    let seen = p.last();
    assert_eq!(seen.path, "/azure/openai/deployments/embed/embeddings");
    assert_eq!(
        seen.query.as_deref(),
        Some(format!("api-version={API_VERSION}").as_str())
    );
    assert_eq!(seen.headers["api-key"], AZURE_KEY);
    assert_eq!(azure.describe(), "azure:embed");

    let llama = OpenAiEmbedder::new(&embed_backend(format!("http://{}/llama/v1", p.addr), None))
        .expect("client");
    let got = llama.embed(two_texts()).await.expect("embeds");
    assert_vectors(&got, &expected("llama-server-embeddings.json"));
}

#[tokio::test]
async fn embeddings_refused_or_short_say_why() {
    let p = provider().await;
    let wrong = OpenAiEmbedder::new(&embed_backend(
        format!("http://{}/openai/v1", p.addr),
        Some("sk-wrong"),
    ))
    .expect("client");
    let error = wrong.embed(two_texts()).await.expect_err("refused");
    assert!(error.to_string().contains("401"), "{error}");
    let api: ApiError = error.into();
    assert_eq!(api.code, ErrorCode::EmbeddingUnavailable);

    // One input, two vectors back: not silently misaligned.
    let openai = OpenAiEmbedder::new(&embed_backend(
        format!("http://{}/openai/v1", p.addr),
        Some(OPENAI_KEY),
    ))
    .expect("client");
    let error = openai
        .embed(vec!["only one".into()])
        .await
        .expect_err("count mismatch");
    assert!(
        error.to_string().contains("asked for 1 vectors, got 2"),
        "{error}"
    );

    // `connect` probes the vector size: the same answer, so the same refusal, at start-up.
    let error = OpenAiEmbedder::connect(&embed_backend(format!("http://{}/azure", p.addr), None))
        .await
        .err()
        .expect("not an OpenAI path");
    assert!(error.to_string().contains("404"), "{error}");
}
