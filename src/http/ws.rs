//! `GET /ws`: checks the browser's Origin against the Host and the public host names, the
//! credential on the upgrade and the socket limits, then upgrades by hand and hands the socket
//! to the chat session. Upgrading by hand keeps the socket's bytes ours: a frame that starts and
//! never finishes is timed (`Meter`), and after a too-large frame the rest of it is read and
//! dropped, so the client reads our 1009 close instead of a TCP reset.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Error as WsError, Message};

use super::client;
use crate::chat::session::{self, Incoming, Meter, Outgoing, Peer};
use crate::error::{ApiError, ErrorCode};
use crate::limits::Refusals;
use crate::state::AppState;

/// Per-socket read buffer.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// The least room for bytes waiting to be written to one socket (see [`write_budget`]).
const MIN_WRITE_BUFFER_BYTES: usize = 256 * 1024;
/// What is read and dropped of a too-large frame before giving up on a clean close.
const DRAIN_BYTES: u64 = 4 * 1024 * 1024;
/// How long that may take.
const DRAIN_TIME: Duration = Duration::from_secs(3);

/// Upgrades to a WebSocket if the origin, credential and limits allow.
pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let headers = request.headers();
    let config = &state.config;
    let address = client::address(peer, headers, &config.auth.trusted_proxies);
    if let Err(origin) = client::check_origin(headers, config) {
        state
            .refusals
            .note(Refusals::ORIGIN, address, &client::shown(&origin));
        return ApiError::new(
            ErrorCode::ForbiddenOrigin,
            "this page's origin may not open this socket; see RAGCHAT_ALLOWED_ORIGINS",
        )
        .into_response();
    }
    let Some(key) = handshake_key(headers) else {
        return ApiError::bad_request("not a WebSocket upgrade (RFC 6455, version 13)")
            .into_response();
    };
    let principal = match state.auth.from_headers(headers).await {
        Ok(principal) => principal,
        Err(e) => {
            state.refusals.note(Refusals::AUTH, address, &e.to_string());
            return ApiError::new(ErrorCode::Unauthorized, "missing or invalid credentials")
                .into_response();
        }
    };
    let place = match state.limits.open_socket(address) {
        Ok(place) => place,
        Err(e) => {
            state.refusals.note(Refusals::SOCKETS, address, &e.message);
            return e.into_response();
        }
    };
    let trace_parent = crate::telemetry::parent_from(headers);
    let on_upgrade = hyper::upgrade::on(request);
    let peer = Peer {
        address,
        principal,
        place: Some(place),
        meter: None,
        trace_parent,
    };
    let sessions = state.sessions.clone();
    // Tracked: shutdown waits for every session (and so for its turn's record).
    sessions.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => serve(TokioIo::new(upgraded), state, peer).await,
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    switching_protocols(&key)
}

/// The `Sec-WebSocket-Key` of a valid version-13 upgrade request.
fn handshake_key(headers: &HeaderMap) -> Option<String> {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if !has(header::CONNECTION, "upgrade") || !has(header::UPGRADE, "websocket") {
        return None;
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION)? != "13" {
        return None;
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?.to_str().ok()?;
    (key.len() == 24).then(|| key.to_owned())
}

fn switching_protocols(key: &str) -> Response {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// A socket whose reads are counted.
struct Metered<S> {
    inner: S,
    meter: Arc<Meter>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.meter.add(buf.filled().len() - before);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn incoming(message: Result<Message, WsError>) -> Incoming {
    match message {
        Ok(Message::Text(text)) => Incoming::Text(text.to_string()),
        Ok(Message::Binary(_)) => Incoming::Binary,
        Ok(Message::Ping(_) | Message::Pong(_)) => Incoming::Heartbeat,
        Ok(Message::Close(_)) => Incoming::Closed,
        Ok(Message::Frame(_)) => Incoming::Heartbeat,
        Err(WsError::Capacity(_)) => Incoming::TooLarge,
        Err(WsError::Utf8(_)) => Incoming::BadUtf8,
        Err(_) => Incoming::Closed,
    }
}

fn message(out: Outgoing) -> Message {
    match out {
        Outgoing::Text(text) => Message::Text(text.into()),
        Outgoing::Ping => Message::Ping(Default::default()),
        Outgoing::Close(code, reason) => Message::Close(Some(CloseFrame {
            code: code.into(),
            reason: reason.into(),
        })),
    }
}

async fn serve<S>(io: S, state: AppState, mut peer: Peer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limit = state.config.server.max_frame_bytes;
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit))
        // tungstenite allocates (and zero-fills) its read buffer per socket up front: 128 KiB
        // by default, which is what an idle socket cost. Client frames are small.
        .read_buffer_size(READ_BUFFER_BYTES)
        // Every frame is flushed as it is sent (one token = one frame): nothing to gather.
        .write_buffer_size(0)
        .max_write_buffer_size(write_budget(&state.config));
    let meter = Arc::new(Meter::default());
    let io = Metered {
        inner: io,
        meter: Arc::clone(&meter),
    };
    peer.meter = Some(meter);
    let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let (sink, stream) = socket.split();
    let closing = session::run(
        state,
        peer,
        stream.map(incoming),
        sink.with(|out| futures::future::ready(Ok::<_, WsError>(message(out)))),
    )
    .await;
    // After a too-large frame: read and drop the rest of it, so the client (still sending)
    // reads our close frame before we hang up, instead of a reset that discards it.
    if closing.code == Some(session::CLOSE_TOO_BIG)
        && let Some(outgoing) = closing.outgoing
        && let Ok(mut socket) = closing.incoming.into_inner().reunite(outgoing.into_inner())
    {
        drain(socket.get_mut()).await;
    }
}

/// Most bytes that may wait to be written to one socket: room for the largest frame this server
/// sends — a `done` with a whole answer (cut at the token limit, 32 bytes a token, JSON-escaped
/// at worst) and, when not streaming, its sources — and no more. Past it the client is dropped
/// instead of buffered for: pongs to a client that pings and never reads stay bounded.
fn write_budget(config: &crate::config::Config) -> usize {
    let answer = (config.llm.max_tokens as usize).saturating_mul(64);
    let sources = config
        .chat
        .top_k
        .saturating_mul(config.index.chunk_tokens.saturating_mul(16) + 1024);
    answer
        .saturating_add(sources)
        .saturating_add(64 * 1024)
        .max(MIN_WRITE_BUFFER_BYTES)
}

/// Reads and drops what the client still sends, until it closes, for a bounded time and size.
async fn drain<S: AsyncRead + Unpin>(io: &mut S) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut left = DRAIN_BYTES;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while left > 0 {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n as u64),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn only_a_version_13_upgrade_has_a_key() {
        let good = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        assert_eq!(
            handshake_key(&upgrade_headers(&good)).as_deref(),
            Some("dGhlIHNhbXBsZSBub25jZQ==")
        );
        for drop in 0..good.len() {
            let mut partial = good.to_vec();
            partial.remove(drop);
            assert!(
                handshake_key(&upgrade_headers(&partial)).is_none(),
                "{partial:?}"
            );
        }
        let mut old = good.to_vec();
        old[2] = ("sec-websocket-version", "8");
        assert!(handshake_key(&upgrade_headers(&old)).is_none());
    }

    #[test]
    fn the_accept_key_is_rfc_6455s() {
        // RFC 6455, section 1.3.
        let response = switching_protocols("dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            response.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
