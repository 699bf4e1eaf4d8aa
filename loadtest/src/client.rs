//! One client's turns: over ragchat's WebSocket (`ask` → `token`… → `done`), or straight at the
//! simulator's `/v1/chat/completions` (SSE). Both feed the same [`TurnRecorder`].

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::sockets;
use crate::sse::SseReader;
use crate::stats::{TurnEnd, TurnRecorder};

pub type Ws = WebSocketStream<TcpStream>;

/// Why a connection attempt failed.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectError(pub String);

/// Opens a WebSocket (with `Authorization: Bearer` when given a token) and waits for ragchat's
/// `ready` frame. `read_buffer` sizes tungstenite's read buffer (its 128 KiB default would cost
/// gigabytes across tens of thousands of sockets).
pub async fn connect_ws(
    url: &str,
    target: SocketAddr,
    source: Option<IpAddr>,
    bearer: Option<&str>,
    read_buffer: usize,
    timeout: Duration,
) -> Result<Ws, ConnectError> {
    let attempt = async {
        let mut request = url
            .into_client_request()
            .map_err(|e| ConnectError(format!("request: {e}")))?;
        if let Some(token) = bearer {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| ConnectError(format!("token: {e}")))?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let tcp = sockets::connect(target, source)
            .await
            .map_err(|e| ConnectError(format!("tcp: {e}")))?;
        let config = WebSocketConfig::default()
            .read_buffer_size(read_buffer)
            .write_buffer_size(0);
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(config))
            .await
            .map_err(|e| ConnectError(format!("handshake: {e}")))?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    if parse_frame(&t).is_some_and(|f| f.kind == "ready") {
                        return Ok(ws);
                    }
                }
                Some(Ok(Message::Close(Some(frame)))) => {
                    let code = u16::from(frame.code);
                    return Err(ConnectError(format!("closed {code} before ready")));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ConnectError(format!("before ready: {e}"))),
                None => return Err(ConnectError("closed before ready".into())),
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(ConnectError("timed out".into())))
}

/// The fields of a server frame the load generator looks at.
#[derive(Debug, Deserialize)]
pub struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow)]
    pub turn_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub finish_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    pub timings_ms: Option<TimingsMs>,
}

/// `done.timings_ms`.
#[derive(Debug, Deserialize)]
pub struct TimingsMs {
    #[serde(default)]
    pub embed: Option<f64>,
    #[serde(default)]
    pub retrieve: Option<f64>,
    #[serde(default)]
    pub ttft: Option<f64>,
}

pub fn parse_frame(text: &str) -> Option<Frame<'_>> {
    serde_json::from_str(text).ok()
}

/// What happened to the socket along with the turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketState {
    Open,
    /// Closed or broken: reconnect before the next turn.
    Gone,
}

/// One turn over the WebSocket. `cancel_after`: send `cancel` after that many tokens.
pub async fn ws_turn(
    ws: &mut Ws,
    rec: &mut TurnRecorder,
    question: &str,
    turn_id: &str,
    cancel_after: Option<u64>,
    timeout: Duration,
) -> (TurnEnd, SocketState) {
    let ask = serde_json::json!({"type": "ask", "question": question, "turn_id": turn_id});
    rec.start(Instant::now());
    if ws.send(Message::text(ask.to_string())).await.is_err() {
        return (TurnEnd::ConnectionLost, SocketState::Gone);
    }
    loop {
        let msg = match tokio::time::timeout(timeout, ws.next()).await {
            Err(_) => {
                return (
                    TurnEnd::Error {
                        code: "loadgen_timeout".into(),
                    },
                    SocketState::Gone,
                );
            }
            Ok(None | Some(Err(_))) => return (TurnEnd::ConnectionLost, SocketState::Gone),
            Ok(Some(Ok(m))) => m,
        };
        let now = Instant::now();
        let text = match &msg {
            Message::Text(t) => t.as_str(),
            Message::Close(_) => return (TurnEnd::ConnectionLost, SocketState::Gone),
            _ => continue,
        };
        let Some(frame) = parse_frame(text) else {
            return (
                TurnEnd::Error {
                    code: "loadgen_unreadable_frame".into(),
                },
                SocketState::Open,
            );
        };
        let ours = frame.turn_id.as_deref().is_none_or(|t| t == turn_id);
        match frame.kind.as_ref() {
            "token" if ours => {
                rec.token(now, frame.text.as_deref().map_or(0, str::len));
                if cancel_after.is_some_and(|n| rec.tokens() == n) && !rec.cancelled() {
                    let cancel = serde_json::json!({"type": "cancel", "turn_id": turn_id});
                    rec.cancel(Instant::now());
                    if ws.send(Message::text(cancel.to_string())).await.is_err() {
                        return (TurnEnd::ConnectionLost, SocketState::Gone);
                    }
                }
            }
            "done" if ours => {
                let t = frame.timings_ms.as_ref();
                return (
                    TurnEnd::Done {
                        finish_reason: frame.finish_reason.as_deref().unwrap_or("").to_owned(),
                        embed_ms: t.and_then(|t| t.embed),
                        retrieve_ms: t.and_then(|t| t.retrieve),
                        server_ttft_ms: t.and_then(|t| t.ttft),
                    },
                    SocketState::Open,
                );
            }
            "error" if ours => {
                return (
                    TurnEnd::Error {
                        code: frame.code.as_deref().unwrap_or("unknown").to_owned(),
                    },
                    SocketState::Open,
                );
            }
            _ => {}
        }
    }
}

/// A chat-completions chunk, as far as the load generator reads it.
#[derive(Debug, Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
}

/// What one SSE `data:` payload means to a turn.
#[derive(Debug, PartialEq)]
pub enum SseEvent {
    Token(usize),
    Finish(String),
    Done,
    Error,
    Other,
}

/// Interprets one `data:` payload of a chat-completions stream.
pub fn sse_event(data: &str, out: &mut Vec<SseEvent>) {
    if data == "[DONE]" {
        out.push(SseEvent::Done);
        return;
    }
    let Ok(chunk) = serde_json::from_str::<Chunk<'_>>(data) else {
        out.push(SseEvent::Other);
        return;
    };
    if chunk.error.is_some() {
        out.push(SseEvent::Error);
        return;
    }
    for c in chunk.choices.unwrap_or_default() {
        if let Some(text) = c.delta.and_then(|d| d.content)
            && !text.is_empty()
        {
            out.push(SseEvent::Token(text.len()));
        }
        if let Some(r) = c.finish_reason {
            out.push(SseEvent::Finish(r.into_owned()));
        }
    }
}

/// The request body of a direct turn: roughly the prompt ragchat would send.
pub fn direct_body(model: &str, question: &str, max_tokens: Option<u32>) -> String {
    let mut body = serde_json::json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "Answer from the numbered sources and cite them as [n]."},
            {"role": "user", "content": question},
        ],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(m) = max_tokens {
        body["max_tokens"] = m.into();
    }
    body.to_string()
}

/// One turn straight against an OpenAI-compatible `chat/completions` URL. A cancelled turn drops
/// the response, as ragchat does upstream.
pub async fn direct_turn(
    http: &reqwest::Client,
    url: &str,
    body: String,
    rec: &mut TurnRecorder,
    cancel_after: Option<u64>,
    timeout: Duration,
) -> TurnEnd {
    rec.start(Instant::now());
    let response = match tokio::time::timeout(
        timeout,
        http.post(url)
            .header("content-type", "application/json")
            .body(body)
            .send(),
    )
    .await
    {
        Err(_) => {
            return TurnEnd::Error {
                code: "loadgen_timeout".into(),
            };
        }
        Ok(Err(_)) => return TurnEnd::ConnectionLost,
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    if !status.is_success() {
        return TurnEnd::Error {
            code: format!("http_{}", status.as_u16()),
        };
    }
    let mut stream = response.bytes_stream();
    let mut reader = SseReader::default();
    let mut events = Vec::with_capacity(8);
    let mut finish = String::new();
    loop {
        let bytes = match tokio::time::timeout(timeout, stream.next()).await {
            Err(_) => {
                return TurnEnd::Error {
                    code: "loadgen_timeout".into(),
                };
            }
            Ok(None | Some(Err(_))) => return TurnEnd::ConnectionLost,
            Ok(Some(Ok(b))) => b,
        };
        let now = Instant::now();
        events.clear();
        reader.feed(&bytes, |data| sse_event(data, &mut events));
        for e in events.drain(..) {
            match e {
                SseEvent::Token(n) => {
                    rec.token(now, n);
                    if cancel_after.is_some_and(|c| rec.tokens() == c) {
                        rec.cancel(now);
                        return TurnEnd::Done {
                            finish_reason: "cancelled".into(),
                            embed_ms: None,
                            retrieve_ms: None,
                            server_ttft_ms: None,
                        };
                    }
                }
                SseEvent::Finish(r) => finish = r,
                SseEvent::Done => {
                    return TurnEnd::Done {
                        finish_reason: std::mem::take(&mut finish),
                        embed_ms: None,
                        retrieve_ms: None,
                        server_ttft_ms: None,
                    };
                }
                SseEvent::Error => {
                    return TurnEnd::Error {
                        code: "stream_error".into(),
                    };
                }
                SseEvent::Other => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_token_done_and_error() {
        let f = parse_frame(r#"{"type":"token","turn_id":"t1","text":" Paris"}"#);
        assert!(f.is_some_and(|f| f.kind == "token" && f.text.as_deref() == Some(" Paris")));
        let done = r#"{"type":"done","turn_id":"t1","conversation_id":"c1","answer":"Paris [1].","citations":[1],
            "finish_reason":"stop","history_turns":0,"usage":{"prompt_tokens":410,"completion_tokens":28},
            "timings_ms":{"embed":11.8,"retrieve":0.5,"ttft":1501.4,"generate":249.1,"total":1750.5}}"#;
        let f = parse_frame(done);
        let t = f.as_ref().and_then(|f| f.timings_ms.as_ref());
        assert_eq!(t.and_then(|t| t.embed), Some(11.8));
        assert_eq!(t.and_then(|t| t.retrieve), Some(0.5));
        let e = parse_frame(r#"{"type":"error","turn_id":null,"code":"busy","message":"x"}"#);
        assert!(e.is_some_and(|e| e.code.as_deref() == Some("busy") && e.turn_id.is_none()));
    }

    #[test]
    fn sse_events_of_the_llama_server_fixture() {
        let fixture = include_str!("../../tests/fixtures/llama-server/stream-usage-length.sse");
        let mut reader = SseReader::default();
        let mut events = Vec::new();
        reader.feed(fixture.as_bytes(), |d| sse_event(d, &mut events));
        let tokens = events
            .iter()
            .filter(|e| matches!(e, SseEvent::Token(_)))
            .count();
        assert_eq!(tokens, 12);
        assert!(events.contains(&SseEvent::Finish("length".into())));
        assert_eq!(events.last(), Some(&SseEvent::Done));
        let mut err = Vec::new();
        sse_event(
            r#"{"error":{"code":500,"message":"x","type":"server_error"}}"#,
            &mut err,
        );
        assert_eq!(err, [SseEvent::Error]);
    }

    #[test]
    fn direct_body_asks_for_a_stream_with_usage() {
        let v: serde_json::Value =
            serde_json::from_str(&direct_body("m", "q?", Some(7))).unwrap_or_default();
        assert_eq!(v["stream"], true);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["max_tokens"], 7);
        assert_eq!(v["messages"][1]["content"], "q?");
    }
}
