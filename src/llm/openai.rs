//! OpenAI-compatible chat completions, with wire types lenient enough for every dialect seen in
//! the field: usage on the finish chunk or in a `choices: []` chunk, extra `timings`,
//! `content: null`, errors as OpenAI-shaped bodies or inside a 200 stream.
//!
//! async-openai builds each provider's URL, query and auth headers (OpenAI, Azure OpenAI); the
//! request and its server-sent events are read here, in the caller's task. async-openai's own
//! streaming spawns a reader task per answer that forwards every chunk over an unbounded channel:
//! one more task wake-up per token, and no backpressure from a slow client to the upstream.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use async_openai::config::Config;
use async_trait::async_trait;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, Sleep};

use super::{ChatEvent, ChatMessage, ChatModel, ChatStream, LlmError, finish_reason};
use crate::config::{LlmBackend, LlmConfig, provider_api, redact_endpoint};

/// An OpenAI-compatible chat endpoint.
pub struct OpenAiChat {
    /// The provider's URL, query and headers (async-openai knows each dialect).
    api: Box<dyn Config>,
    http: reqwest::Client,
    /// Scheme, host and port, for `/health`.
    endpoint: String,
    model: String,
    temperature: f32,
    max_tokens: u32,
    stall: Duration,
}

impl OpenAiChat {
    /// A client for the configured endpoint. Does no I/O.
    pub fn new(config: &LlmConfig) -> Result<Self, LlmError> {
        let api = match &config.backend {
            LlmBackend::OpenAi { url, api_key } => provider_api(url, api_key.as_ref(), None),
            LlmBackend::Azure {
                url,
                api_key,
                deployment,
                api_version,
            } => provider_api(url, api_key.as_ref(), Some((deployment, api_version))),
        };
        // No overall timeout: an answer streams for as long as it takes. Stalls are caught per
        // chunk instead (see `stall`). No retries with back-off: a 429 or a refused connection
        // retried for seconds would hide an outage behind silence; a chat user is better served
        // by a prompt `llm_unavailable` or `busy`. The one retry is in `send`.
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| LlmError::Unavailable(e.to_string()))?;
        Ok(Self {
            api,
            http,
            endpoint: redact_endpoint(config.backend.url()),
            model: config.model.clone(),
            temperature: config.temperature,
            max_tokens: config.max_tokens,
            stall: config.stall_timeout,
        })
    }

    /// A request to the provider, carrying the current span's `traceparent` (the upstream's own
    /// spans join the turn's trace).
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.api.url(path))
            .headers(self.api.headers())
            .headers(crate::telemetry::inject())
            .query(&self.api.query())
    }
}

/// `retry-after-ms` (Azure, OpenAI) or `retry-after` in seconds.
fn retry_after_ms(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    let get = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    get("retry-after-ms")
        .or_else(|| get("retry-after").map(|s| s * 1000.0))
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| ms as u64)
}

#[derive(Serialize)]
struct CompletionBody<'a> {
    model: &'a str,
    messages: Vec<ChatMessage>,
    stream: bool,
    /// Streams only: OpenAI refuses `stream_options` on a request that does not stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    temperature: f32,
    max_tokens: u32,
}

/// A whole (non-streamed) answer, as leniently as the streamed chunks.
#[derive(Debug, Deserialize)]
struct Completion {
    #[serde(default)]
    choices: Vec<WholeChoice>,
}

#[derive(Debug, Deserialize)]
struct WholeChoice {
    #[serde(default)]
    message: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// One SSE chunk, as leniently as the dialects require.
#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u32>,
    #[serde(default)]
    completion_tokens: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct WireError {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

impl WireError {
    /// `code` is a string (OpenAI) or the HTTP status as a number (llama-server).
    fn code_string(&self) -> Option<String> {
        match self.code.as_ref()? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    fn into_llm_error(self, status: Option<u16>) -> LlmError {
        let code = self.code_string();
        let message = self.message.unwrap_or_else(|| "unknown error".into());
        classify(status, self.kind.as_deref(), code.as_deref(), message, None)
    }
}

/// Maps an upstream error to what a client can act on.
fn classify(
    status: Option<u16>,
    kind: Option<&str>,
    code: Option<&str>,
    message: String,
    retry_after_ms: Option<u64>,
) -> LlmError {
    let overflow = matches!(kind, Some("exceed_context_size_error"))
        || matches!(code, Some("context_length_exceeded"))
        || message.contains("context length")
        || message.contains("context size");
    let status = status.or_else(|| code.and_then(|c| c.parse().ok()));
    if overflow {
        LlmError::ContextOverflow(message)
    } else if matches!(code, Some("content_filter")) {
        LlmError::ContentFiltered(message)
    } else if status == Some(429) || matches!(kind, Some("rate_limit_error")) {
        LlmError::RateLimited {
            message,
            retry_after_ms,
        }
    } else if status == Some(503) && !message.to_ascii_lowercase().contains("loading") {
        // At capacity ("no slot available" from llama-server, "overloaded" from OpenAI): busy,
        // retry soon. A model still loading is unavailable instead.
        LlmError::RateLimited {
            message,
            retry_after_ms: retry_after_ms.or(Some(1_000)),
        }
    } else if matches!(status, Some(400..=499)) || matches!(kind, Some("invalid_request_error")) {
        LlmError::Rejected(message)
    } else {
        LlmError::Unavailable(message)
    }
}

/// A non-2xx answer: an OpenAI-shaped error body when there is one, the status otherwise.
fn http_error(status: reqwest::StatusCode, retry_after_ms: Option<u64>, body: &str) -> LlmError {
    #[derive(Deserialize)]
    struct Wrapped {
        error: WireError,
    }
    let (code, kind, message) = match serde_json::from_str::<Wrapped>(body) {
        Ok(Wrapped { error }) => (
            error.code_string(),
            error.kind,
            error.message.unwrap_or_else(|| format!("HTTP {status}")),
        ),
        Err(_) => (None, None, format!("HTTP {status}")),
    };
    classify(
        Some(status.as_u16()),
        kind.as_deref(),
        code.as_deref(),
        message,
        retry_after_ms,
    )
}

/// Sends the request, once more at once if the connection failed after it was made and before
/// any response. That is the race of a kept-alive connection the server closes as idle just as
/// a request goes out on it (llama-server and uvicorn close them after 5 s): the request never
/// reached the model, and a new connection carries it. A refused connection is not retried (the
/// endpoint is down: say so now), nor is anything after a response began.
async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, LlmError> {
    let again = request.try_clone();
    match request.send().await {
        Err(e) if e.is_request() && !e.is_connect() && !e.is_timeout() => {
            let Some(again) = again else {
                return Err(unavailable(&e));
            };
            tracing::debug!(error = %unavailable(&e), "chat request failed before any response; sending it again");
            again.send().await.map_err(|e| unavailable(&e))
        }
        result => result.map_err(|e| unavailable(&e)),
    }
}

/// `Unavailable` with the whole chain of causes: reqwest's own message ("error sending request
/// for url …") leaves out the one that says what happened.
fn unavailable(e: &reqwest::Error) -> LlmError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    LlmError::Unavailable(message)
}

/// A heartbeat (vLLM, some proxies): no chunk, and no sign that the model is still generating.
fn is_heartbeat(event: &Event) -> bool {
    event.event == "keepalive" || event.data.is_empty()
}

/// Turns one server-sent event into the events it carries; `None` at the end marker.
fn events_of(event: &Event) -> Option<Result<Vec<ChatEvent>, LlmError>> {
    if event.data == "[DONE]" {
        return None;
    }
    let chunk: Chunk = match serde_json::from_str(&event.data) {
        Ok(chunk) => chunk,
        Err(e) => {
            return Some(Err(LlmError::Unavailable(format!(
                "unreadable response ({e})"
            ))));
        }
    };
    if let Some(error) = chunk.error {
        return Some(Err(error.into_llm_error(None)));
    }
    let mut events = Vec::with_capacity(1);
    for choice in chunk.choices.unwrap_or_default() {
        if let Some(text) = choice.delta.and_then(|d| d.content)
            && !text.is_empty()
        {
            events.push(ChatEvent::Token(text));
        }
        if let Some(reason) = choice.finish_reason {
            events.push(ChatEvent::Finish(finish_reason(&reason)));
        }
    }
    if let Some(u) = chunk.usage {
        events.push(ChatEvent::Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        });
    }
    Some(Ok(events))
}

type SseEvents =
    Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// An answer being read: the upstream's events, what one chunk carried beyond its first event,
/// and the stall watch.
struct Answer {
    events: SseEvents,
    pending: VecDeque<ChatEvent>,
    stall: Duration,
    /// When the last chunk arrived.
    heard: Instant,
    /// Fires at `heard + stall` at the latest. Moved only when it fires (not at every chunk), so
    /// a token costs no timer-wheel update. Heartbeat events do not count as heard.
    watch: Pin<Box<Sleep>>,
}

impl Answer {
    /// The next event, an error that ends the answer, or `None` at its end.
    async fn next(&mut self) -> Option<Result<ChatEvent, LlmError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            let event = tokio::select! {
                biased;
                event = self.events.next() => event,
                () = &mut self.watch => {
                    let deadline = self.heard + self.stall;
                    if Instant::now() >= deadline {
                        let stall = self.stall;
                        return Some(Err(LlmError::Unavailable(format!("no token for {stall:?}"))));
                    }
                    self.watch.as_mut().reset(deadline);
                    continue;
                }
            };
            let event = match event? {
                Ok(event) => event,
                // The body broke off: say why, as for a failed send.
                Err(EventStreamError::Transport(e)) => return Some(Err(unavailable(&e))),
                Err(e) => return Some(Err(LlmError::Unavailable(e.to_string()))),
            };
            // Heartbeats keep a connection open; they do not keep a stalled answer alive.
            if is_heartbeat(&event) {
                continue;
            }
            self.heard = Instant::now();
            match events_of(&event)? {
                Ok(events) => self.pending.extend(events),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

#[async_trait]
impl ChatModel for OpenAiChat {
    async fn stream(&self, messages: Vec<ChatMessage>) -> Result<ChatStream, LlmError> {
        let body = CompletionBody {
            model: &self.model,
            messages,
            stream: true,
            stream_options: Some(StreamOptions {
                include_usage: true,
            }),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
        };
        let body = serde_json::to_vec(&body).map_err(|e| LlmError::Rejected(e.to_string()))?;
        let stall = self.stall;
        let no_response = || LlmError::Unavailable(format!("no response within {stall:?}"));
        let request = self
            .request(reqwest::Method::POST, "/chat/completions")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let response = tokio::time::timeout(stall, send(request))
            .await
            .map_err(|_| no_response())??;
        let status = response.status();
        // On the turn's `llm.stream` span, where there is one.
        tracing::Span::current().record("http.response.status_code", i64::from(status.as_u16()));
        if !status.is_success() {
            let retry_after_ms = retry_after_ms(response.headers());
            let body = tokio::time::timeout(stall, response.text())
                .await
                .map_err(|_| no_response())?
                .unwrap_or_default();
            return Err(http_error(status, retry_after_ms, &body));
        }

        // Every chunk must arrive within `stall` of the previous one, so a hung upstream ends
        // the turn with an error instead of holding the socket forever.
        let heard = Instant::now();
        let answer = Answer {
            events: Box::pin(response.bytes_stream().eventsource()),
            pending: VecDeque::new(),
            stall,
            heard,
            watch: Box::pin(tokio::time::sleep_until(heard + stall)),
        };
        let stream = futures::stream::unfold(Some(answer), |state| async move {
            let mut answer = state?;
            match answer.next().await? {
                Ok(event) => Some((Ok(event), Some(answer))),
                // An error ends the answer.
                Err(e) => Some((Err(e), None)),
            }
        });
        Ok(ChatStream::new(stream.boxed()))
    }

    async fn complete(
        &self,
        messages: Vec<ChatMessage>,
        max_tokens: u32,
        timeout: Duration,
    ) -> Result<String, LlmError> {
        let body = CompletionBody {
            model: &self.model,
            messages,
            stream: false,
            stream_options: None,
            temperature: 0.0,
            max_tokens,
        };
        let body = serde_json::to_vec(&body).map_err(|e| LlmError::Rejected(e.to_string()))?;
        let request = self
            .request(reqwest::Method::POST, "/chat/completions")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let whole = async {
            let response = send(request).await?;
            let status = response.status();
            let retry_after_ms = retry_after_ms(response.headers());
            let body = response.bytes().await.map_err(|e| unavailable(&e))?;
            if !status.is_success() {
                return Err(http_error(
                    status,
                    retry_after_ms,
                    &String::from_utf8_lossy(&body),
                ));
            }
            Ok(body)
        };
        let body = tokio::time::timeout(timeout, whole)
            .await
            .map_err(|_| LlmError::Unavailable(format!("no answer within {timeout:?}")))??;
        let completion: Completion = serde_json::from_slice(&body)
            .map_err(|e| LlmError::Unavailable(format!("unreadable response ({e})")))?;
        let choice = completion
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| LlmError::Unavailable("an answer without choices".into()))?;
        if choice.finish_reason.as_deref() == Some("content_filter") {
            return Err(LlmError::ContentFiltered("the answer was filtered".into()));
        }
        Ok(choice.message.and_then(|m| m.content).unwrap_or_default())
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn describe(&self) -> String {
        format!("{} ({})", self.endpoint, self.model)
    }

    async fn ping(&self) -> Result<(), LlmError> {
        let response = self
            .request(reqwest::Method::GET, "/models")
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        let status = response.status();
        // 404: the endpoint has no model list (Azure deployments); it answered, so it is up.
        if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
            Ok(())
        } else {
            let retry_after_ms = retry_after_ms(response.headers());
            let body = response.text().await.unwrap_or_default();
            Err(http_error(status, retry_after_ms, &body))
        }
    }
}
