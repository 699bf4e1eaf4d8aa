//! `GET /ws`: checks the Origin, upgrades, and hands the socket to the chat session.

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};

use crate::chat::session::{self, Incoming, Outgoing};
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// Per-socket read buffer.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Upgrades to a WebSocket if the Origin is allowed.
pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Err(origin) = check_origin(&headers, &state.config.server.allowed_origins) {
        tracing::warn!(%origin, "refused a WebSocket from a foreign origin");
        return ApiError::new(
            ErrorCode::ForbiddenOrigin,
            format!("origin {origin} may not open this socket; see RAGCHAT_ALLOWED_ORIGINS"),
        )
        .into_response();
    }
    let limit = state.config.server.max_frame_bytes;
    ws.max_message_size(limit)
        .max_frame_size(limit)
        // tungstenite allocates (and zero-fills) its read buffer per socket up front: 128 KiB by
        // default, which is what an idle socket cost (docs/benchmarks.md). Client frames are
        // small; a larger one just takes several reads.
        .read_buffer_size(READ_BUFFER_BYTES)
        // Every frame is flushed as it is sent (one token = one frame), so there is nothing to
        // gather: write each out at once. A slow reader's backlog is the frame being sent: the
        // turn waits for it (and the send timeout drops a stalled reader).
        .write_buffer_size(0)
        .on_upgrade(move |socket| serve(socket, state))
}

/// An Origin is allowed when absent (non-browser clients), when it names this very host, or when
/// it is in the allowlist. Returns the refused origin otherwise.
fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().map_err(|_| "<non-ascii>".to_owned())?;
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return Ok(());
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    match (host, origin_host) {
        (Some(host), Some(origin_host)) if host.eq_ignore_ascii_case(origin_host) => Ok(()),
        _ => Err(origin.to_owned()),
    }
}

async fn serve(socket: WebSocket, state: AppState) {
    let _session = state.sessions.token();
    let (sink, stream) = socket.split();
    let incoming = stream.map(|message| match message {
        Ok(Message::Text(text)) => Incoming::Text(text.to_string()),
        Ok(Message::Binary(_)) => Incoming::Binary,
        Ok(Message::Ping(_) | Message::Pong(_)) => Incoming::Heartbeat,
        Ok(Message::Close(_)) => Incoming::Closed,
        Err(e) => {
            let too_large = e
                .into_inner()
                .downcast::<tungstenite::Error>()
                .is_ok_and(|e| matches!(*e, tungstenite::Error::Capacity(_)));
            if too_large {
                Incoming::TooLarge
            } else {
                Incoming::Closed
            }
        }
    });
    let outgoing = sink.with(|out: Outgoing| async move {
        Ok::<_, axum::Error>(match out {
            Outgoing::Text(text) => Message::Text(text.into()),
            Outgoing::Ping => Message::Ping(Default::default()),
            Outgoing::Close(code, reason) => Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })),
        })
    });
    session::run(state, Box::pin(incoming), Box::pin(outgoing)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().expect("valid"));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().expect("valid"));
        }
        h
    }

    #[test]
    fn origin_policy() {
        let none: Vec<String> = vec![];
        assert!(check_origin(&headers(None, "localhost:8000"), &none).is_ok());
        assert!(
            check_origin(
                &headers(Some("http://localhost:8000"), "localhost:8000"),
                &none
            )
            .is_ok()
        );
        assert!(
            check_origin(
                &headers(Some("https://evil.example"), "localhost:8000"),
                &none
            )
            .is_err()
        );
        assert!(
            check_origin(
                &headers(Some("http://localhost:9999"), "localhost:8000"),
                &none
            )
            .is_err()
        );
        let allowed = vec!["https://chat.example.com".to_owned()];
        assert!(
            check_origin(
                &headers(Some("https://chat.example.com"), "api:8000"),
                &allowed
            )
            .is_ok()
        );
        assert!(
            check_origin(
                &headers(Some("https://other.example"), "api:8000"),
                &allowed
            )
            .is_err()
        );
        let any = vec!["*".to_owned()];
        assert!(check_origin(&headers(Some("https://other.example"), "api:8000"), &any).is_ok());
    }
}
