//! The LLM simulator: an OpenAI-compatible server in the llama-server dialect with a fixed
//! time to first token, inter-token interval and answer length, a number of slots, fault
//! injection, and deterministic `/v1/embeddings`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

mod embeddings;
pub mod issuer;
mod pacing;

use embeddings::embeddings;
use pacing::{Plan, TokenStream};

use crate::sse::{self, Completion, Timings, Usage, Vocab};

/// A fault the simulator injects into a share of chat requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    None,
    /// HTTP 429 with `Retry-After` and an OpenAI error body, before any token.
    #[value(name = "429")]
    RateLimit,
    /// Stop sending mid-stream and keep the connection open.
    Stall,
    /// Close the connection mid-stream.
    Cut,
    /// A `data: {"error":…}` event inside the 200 stream, then the end of the body.
    ErrorInStream,
}

/// The simulator's knobs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub model: String,
    pub ttft: Duration,
    pub itl: Duration,
    pub tokens: u32,
    /// Concurrent generations; 0 = unlimited.
    pub slots: usize,
    /// Excess requests wait for a slot (true) or get 503 (false).
    pub queue: bool,
    pub fault: Fault,
    pub fault_rate: f64,
    /// Token index at which stall/cut/error-in-stream strike; `None` = half the answer.
    pub fault_after: Option<u32>,
    pub retry_after_secs: u64,
    pub embed_dim: usize,
    pub embed_delay: Duration,
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            model: "smollm2".into(),
            ttft: Duration::from_millis(200),
            itl: Duration::from_millis(50),
            tokens: 64,
            slots: 0,
            queue: true,
            fault: Fault::None,
            fault_rate: 0.0,
            fault_after: None,
            retry_after_secs: 1,
            embed_dim: 384,
            embed_delay: Duration::ZERO,
            seed: 0,
        }
    }
}

struct Inner {
    config: SimConfig,
    slots: Option<Arc<Semaphore>>,
    requests: AtomicU64,
    vocab: Arc<Vocab>,
}

/// The simulator's shared state.
#[derive(Clone)]
pub struct Sim(Arc<Inner>);

impl Sim {
    pub fn new(config: SimConfig) -> Self {
        let slots = (config.slots > 0).then(|| Arc::new(Semaphore::new(config.slots)));
        Self(Arc::new(Inner {
            config,
            slots,
            requests: AtomicU64::new(0),
            vocab: Arc::new(Vocab::default()),
        }))
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/health", get(health))
            .route("/v1/models", get(models))
            .route("/models", get(models))
            .route("/v1/chat/completions", post(chat))
            .route("/chat/completions", post(chat))
            .route("/v1/embeddings", post(embeddings))
            .route("/embeddings", post(embeddings))
            .with_state(self)
    }

    /// Whether request number `n` gets the configured fault (deterministic in `seed`).
    fn faulty(&self, n: u64) -> bool {
        let c = &self.0.config;
        c.fault != Fault::None && unit_f64(splitmix64(c.seed ^ n)) < c.fault_rate
    }
}

async fn health() -> Response {
    json_response(StatusCode::OK, r#"{"status":"ok"}"#.to_owned())
}

async fn models(State(sim): State<Sim>) -> Response {
    let body = serde_json::json!({
        "object": "list",
        "data": [{"id": sim.0.config.model, "object": "model", "created": now_secs(), "owned_by": "llamacpp"}],
    });
    json_response(StatusCode::OK, body.to_string())
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

fn error_response(status: StatusCode, message: &str, kind: &str) -> Response {
    json_response(status, sse::error_body(status.as_u16(), message, kind))
}

/// A request body, or the 400 an OpenAI-compatible server answers to JSON it cannot read.
fn parse_request<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error_response(
            StatusCode::BAD_REQUEST,
            &format!("invalid JSON: {e}"),
            "invalid_request_error",
        ))
    })
}

#[derive(Deserialize)]
struct ChatRequest {
    messages: Option<serde_json::Value>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// A rough prompt token count: four characters a token, plus a few per message.
fn prompt_tokens(messages: &[serde_json::Value]) -> u32 {
    let chars: usize = messages
        .iter()
        .map(|m| {
            m.get("content")
                .and_then(|c| c.as_str())
                .map_or(0, str::len)
                / 4
                + 4
        })
        .sum();
    u32::try_from(chars).unwrap_or(u32::MAX)
}

async fn chat(State(sim): State<Sim>, body: Bytes) -> Response {
    let request: ChatRequest = match parse_request(&body) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    let Some(serde_json::Value::Array(messages)) = &request.messages else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "Expected 'messages' to be an array",
            "invalid_request_error",
        );
    };
    let prompt_n = prompt_tokens(messages);
    let config = &sim.0.config;
    let n = sim.0.requests.fetch_add(1, Ordering::Relaxed);
    let fault = if sim.faulty(n) {
        config.fault
    } else {
        Fault::None
    };
    if fault == Fault::RateLimit {
        let mut response = json_response(
            StatusCode::TOO_MANY_REQUESTS,
            sse::error_body(
                429,
                "Rate limit reached for requests (simulated)",
                "rate_limit_error",
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&config.retry_after_secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return response;
    }
    let permit = match &sim.0.slots {
        None => None,
        Some(slots) if config.queue => slots.clone().acquire_owned().await.ok(),
        Some(slots) => match slots.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                return error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no slot available",
                    "unavailable_error",
                );
            }
        },
    };
    let limit = request.max_tokens.or(request.max_completion_tokens);
    let (tokens, reason) = match limit {
        Some(m) if m < config.tokens => (m, "length"),
        _ => (config.tokens, "stop"),
    };
    let completion = Completion {
        id: completion_id(config.seed, n),
        created: now_secs(),
        model: config.model.clone(),
    };
    if !request.stream {
        return non_stream(&sim, completion, prompt_n, tokens, reason, permit).await;
    }
    let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
    let fault_at = (fault != Fault::None).then(|| {
        let at = config.fault_after.unwrap_or(tokens / 2);
        (fault, at.min(tokens))
    });
    let stream = TokenStream::new(
        &sim,
        completion,
        Plan {
            prompt_n,
            tokens,
            reason,
            include_usage,
            fault_at,
        },
        permit,
    );
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

#[derive(Serialize)]
struct NonStreamMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct NonStreamChoice<'a> {
    finish_reason: &'a str,
    index: u32,
    message: NonStreamMessage<'a>,
}

/// nonstream.json's field order.
#[derive(Serialize)]
struct NonStream<'a> {
    choices: [NonStreamChoice<'a>; 1],
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    object: &'static str,
    usage: Usage,
    id: &'a str,
    timings: Timings,
}

async fn non_stream(
    sim: &Sim,
    completion: Completion,
    prompt_n: u32,
    tokens: u32,
    reason: &str,
    permit: Option<OwnedSemaphorePermit>,
) -> Response {
    let c = &sim.0.config;
    let generate = c.itl * tokens;
    tokio::time::sleep(c.ttft + generate).await;
    drop(permit);
    let answer = sim.0.vocab.answer(tokens);
    let body = NonStream {
        choices: [NonStreamChoice {
            finish_reason: reason,
            index: 0,
            message: NonStreamMessage {
                role: "assistant",
                content: &answer,
            },
        }],
        created: completion.created,
        model: &completion.model,
        system_fingerprint: "b0-unknown",
        object: "chat.completion",
        usage: Usage::new(prompt_n, tokens),
        id: &completion.id,
        timings: Timings::simulated(prompt_n, ms(c.ttft), tokens, ms(generate)),
    };
    match serde_json::to_string(&body) {
        Ok(s) => json_response(StatusCode::OK, s),
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &e.to_string(),
            "server_error",
        ),
    }
}

fn unit_f64(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `chatcmpl-` and 32 letters, like llama-server's ids.
fn completion_id(seed: u64, n: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut state = splitmix64(seed ^ n.rotate_left(17) ^ now_nanos());
    let mut id = String::with_capacity(41);
    id.push_str("chatcmpl-");
    for _ in 0..32 {
        state = splitmix64(state);
        id.push(ALPHABET[(state % ALPHABET.len() as u64) as usize] as char);
    }
    id
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(config: SimConfig) -> Sim {
        Sim::new(config)
    }

    #[test]
    fn fault_rate_is_roughly_honoured() {
        let s = sim(SimConfig {
            fault: Fault::Cut,
            fault_rate: 0.25,
            ..SimConfig::default()
        });
        let hits = (0..10_000).filter(|n| s.faulty(*n)).count();
        assert!((2_200..2_800).contains(&hits), "{hits}");
    }

    #[test]
    fn completion_ids_look_like_llama_servers() {
        let id = completion_id(0, 1);
        assert_eq!(id.len(), "chatcmpl-zAHamgmpmmrIBMhowFUyAlId5Oeouebo".len());
        assert!(id.starts_with("chatcmpl-"));
    }
}
