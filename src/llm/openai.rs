//! OpenAI-compatible chat completions over async-openai, with wire types lenient enough for every
//! dialect seen in the field: usage on the finish chunk or in a `choices: []` chunk, extra
//! `timings`, `content: null`, errors as OpenAI-shaped bodies or inside a 200 stream.

use std::time::Duration;

use async_openai::Client;
use async_openai::config::{AzureConfig, Config, OpenAIConfig};
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use async_trait::async_trait;
use futures::StreamExt;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::{ChatEvent, ChatMessage, ChatModel, ChatStream, LlmError};
use crate::config::{LlmConfig, LlmProvider};

/// An OpenAI-compatible chat endpoint.
pub struct OpenAiChat {
    client: Client<Box<dyn Config>>,
    http: reqwest::Client,
    model: String,
    temperature: f32,
    max_tokens: u32,
    stall: Duration,
}

/// A 429, caught below async-openai so its retry hint survives (async-openai drops headers).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct RateLimited {
    message: String,
    retry_after_ms: Option<u64>,
}

impl OpenAiChat {
    /// A client for the configured endpoint. Does no I/O.
    pub fn new(config: &LlmConfig) -> Result<Self, LlmError> {
        let base = config.url.trim_end_matches('/');
        let api_config: Box<dyn Config> = match config.provider {
            LlmProvider::Openai => {
                let mut c = OpenAIConfig::new().with_api_base(base);
                if let Some(key) = &config.api_key {
                    c = c.with_api_key(key.expose_secret());
                }
                Box::new(c)
            }
            LlmProvider::Azure => {
                let mut c = AzureConfig::new()
                    .with_api_base(base)
                    .with_api_version(&config.azure_api_version)
                    .with_deployment_id(config.azure_deployment.clone().unwrap_or_default());
                if let Some(key) = &config.api_key {
                    c = c.with_api_key(key.expose_secret());
                }
                Box::new(c)
            }
        };
        // No overall timeout: an answer streams for as long as it takes. Stalls are caught per
        // token instead (see `stall`).
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| LlmError::Unavailable(e.to_string()))?;
        let transport = http.clone();
        // Our own transport instead of async-openai's default: that one retries 429s and
        // connection failures with back-off, which would hide an outage behind seconds of
        // silence; a chat user is better served by a prompt `llm_unavailable` or `busy`.
        let service = tower::service_fn(move |factory: HttpRequestFactory| {
            let http = transport.clone();
            async move {
                let request = factory.build().await?;
                let response = http.execute(request).await.map_err(OpenAIError::Reqwest)?;
                if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    let retry_after_ms = retry_after_ms(response.headers());
                    let body = response.text().await.unwrap_or_default();
                    return Err(OpenAIError::Boxed(Box::new(RateLimited {
                        message: error_message(&body).unwrap_or(body),
                        retry_after_ms,
                    })));
                }
                Ok(response)
            }
        });
        Ok(Self {
            client: Client::with_config(api_config).with_http_service(service),
            http,
            model: config.model.clone(),
            temperature: config.temperature,
            max_tokens: config.max_tokens,
            stall: Duration::from_secs(config.stall_timeout_secs),
        })
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

/// The `error.message` of an OpenAI-shaped error body.
fn error_message(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    Some(v.get("error")?.get("message")?.as_str()?.to_owned())
}

#[derive(Serialize)]
struct CompletionBody {
    model: String,
    messages: Vec<ChatMessage>,
    stream: bool,
    stream_options: StreamOptions,
    temperature: f32,
    max_tokens: u32,
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
    fn into_llm_error(self, status: Option<u16>) -> LlmError {
        let message = self.message.unwrap_or_else(|| "unknown error".into());
        let code = self.code.as_ref().and_then(|c| match c {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
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
    } else if status == Some(429) || matches!(kind, Some("rate_limit_error")) {
        LlmError::RateLimited {
            message,
            retry_after_ms,
        }
    } else if matches!(status, Some(400..=499)) || matches!(kind, Some("invalid_request_error")) {
        LlmError::Rejected(message)
    } else {
        LlmError::Unavailable(message)
    }
}

fn map_openai_error(e: OpenAIError) -> LlmError {
    match e {
        OpenAIError::ApiError(api) => classify(
            Some(api.status_code.as_u16()),
            api.api_error.r#type.as_deref(),
            api.api_error.code.as_deref(),
            api.api_error.message,
            None,
        ),
        OpenAIError::Boxed(inner) => match inner.downcast::<RateLimited>() {
            Ok(rl) => LlmError::RateLimited {
                message: rl.message,
                retry_after_ms: rl.retry_after_ms,
            },
            Err(other) => LlmError::Unavailable(other.to_string()),
        },
        // A body that is not a chunk: maybe an error object inside a 200 stream.
        OpenAIError::JSONDeserialize(err, content) => {
            #[derive(Deserialize)]
            struct Wrapped {
                error: WireError,
            }
            match serde_json::from_str::<Wrapped>(&content) {
                Ok(w) => w.error.into_llm_error(None),
                Err(_) => LlmError::Unavailable(format!("unreadable response ({err})")),
            }
        }
        OpenAIError::Reqwest(e) => LlmError::Unavailable(e.to_string()),
        OpenAIError::StreamError(e) => LlmError::Unavailable(e.to_string()),
        other => LlmError::Unavailable(other.to_string()),
    }
}

/// Turns one chunk into the events it carries.
fn events_of(chunk: Chunk) -> Result<Vec<ChatEvent>, LlmError> {
    if let Some(error) = chunk.error {
        return Err(error.into_llm_error(None));
    }
    let mut events = Vec::new();
    for choice in chunk.choices.unwrap_or_default() {
        if let Some(text) = choice.delta.and_then(|d| d.content)
            && !text.is_empty()
        {
            events.push(ChatEvent::Token(text));
        }
        if let Some(reason) = choice.finish_reason {
            events.push(ChatEvent::Finish(reason));
        }
    }
    if let Some(u) = chunk.usage {
        events.push(ChatEvent::Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        });
    }
    Ok(events)
}

#[async_trait]
impl ChatModel for OpenAiChat {
    async fn stream(&self, messages: Vec<ChatMessage>) -> Result<ChatStream, LlmError> {
        let body = CompletionBody {
            model: self.model.clone(),
            messages,
            stream: true,
            stream_options: StreamOptions {
                include_usage: true,
            },
            temperature: self.temperature,
            max_tokens: self.max_tokens,
        };
        let stall = self.stall;
        let upstream = tokio::time::timeout(
            stall,
            self.client.chat().create_stream_byot::<_, Chunk>(body),
        )
        .await
        .map_err(|_| LlmError::Unavailable(format!("no response within {stall:?}")))?
        .map_err(map_openai_error)?;

        // Every chunk must arrive within `stall` of the previous one, so a hung upstream ends
        // the turn with an error instead of holding the socket forever.
        let stream = futures::stream::unfold(Some(upstream), move |state| async move {
            let mut upstream = state?;
            match tokio::time::timeout(stall, upstream.next()).await {
                Err(_) => Some((
                    Err(LlmError::Unavailable(format!("no token for {stall:?}"))),
                    None,
                )),
                Ok(None) => None,
                Ok(Some(Err(e))) => Some((Err(map_openai_error(e)), None)),
                Ok(Some(Ok(chunk))) => match events_of(chunk) {
                    Ok(events) => Some((Ok(events), Some(upstream))),
                    Err(e) => Some((Err(e), None)),
                },
            }
        })
        .flat_map(|item| match item {
            Ok(events) => futures::stream::iter(events.into_iter().map(Ok)).left_stream(),
            Err(e) => futures::stream::once(async move { Err(e) }).right_stream(),
        });
        Ok(stream.boxed())
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn ping(&self) -> Result<(), LlmError> {
        let config = self.client.config();
        let response = self
            .http
            .get(config.url("/models"))
            .headers(config.headers())
            .query(&config.query())
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map_err(|e| LlmError::Unavailable(e.to_string()))?;
        let status = response.status();
        // 404: the endpoint has no model list (Azure deployments); it answered, so it is up.
        if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
            Ok(())
        } else {
            let body = response.text().await.unwrap_or_default();
            Err(classify(
                Some(status.as_u16()),
                None,
                None,
                error_message(&body).unwrap_or_else(|| format!("HTTP {status}")),
                None,
            ))
        }
    }
}
