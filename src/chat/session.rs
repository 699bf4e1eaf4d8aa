//! One WebSocket session: reads client frames, runs at most one turn at a time, forwards the
//! turn's frames, keeps the socket alive and closes it when idle or at shutdown. Generic over the
//! transport so it can be driven without a network.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use futures::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio::time::{Duration, MissedTickBehavior, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::protocol::{
    ClientFrame, ErrorFrame, Limits, PROTOCOL, Ready, ServerFrame, parse_client_frame, token_json,
};
use super::{OutputGone, TurnEvent, TurnOutput, TurnRequest, TurnSummary, run_turn};
use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};

/// What arrives from the client, transport-neutral.
#[derive(Debug)]
pub enum Incoming {
    /// A text frame.
    Text(String),
    /// A binary frame (unsupported).
    Binary,
    /// A ping or pong from the client's WebSocket stack.
    Heartbeat,
    /// The client closed, or the transport failed.
    Closed,
    /// A frame over the transport limit.
    TooLarge,
}

/// What the session sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A text frame.
    Text(String),
    /// A keep-alive ping.
    Ping,
    /// A close frame with a code and reason; the session ends after it.
    Close(u16, &'static str),
}

/// Close code: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code: message too big.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: service restart.
pub const CLOSE_RESTART: u16 = 1012;

/// A client that takes no frame for this long is treated as gone: a stalled reader must not hold
/// the session (or a shutdown) forever.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket's sending half, shared: the session sends replies, pings and each turn's final
/// frame; the running turn writes its sources and tokens straight out, so a token wakes one task
/// (the turn's) instead of hopping through the session. An async mutex, held across one frame's
/// send: it only orders the writers of this one socket, and the send timeout bounds the hold.
/// Once a send fails, the socket is marked gone and every later send fails at once, so a client
/// that stopped reading costs one `SEND_TIMEOUT`, not one per writer.
struct SocketTx<O> {
    sink: Mutex<O>,
    gone: AtomicBool,
}

type SharedSink<O> = Arc<SocketTx<O>>;

/// Sends one frame; false when the client is gone or has taken nothing for `SEND_TIMEOUT`
/// (waiting for the socket's other writer included).
async fn send<O: Sink<Outgoing> + Unpin>(tx: &SocketTx<O>, frame: Outgoing) -> bool {
    if tx.gone.load(Ordering::Relaxed) {
        return false;
    }
    let sent = tokio::time::timeout(SEND_TIMEOUT, async {
        let mut sink = tx.sink.lock().await;
        // The other writer may have found the client gone while this one waited.
        if tx.gone.load(Ordering::Relaxed) {
            return false;
        }
        sink.send(frame).await.is_ok()
    })
    .await;
    let ok = matches!(sent, Ok(true));
    if !ok {
        tx.gone.store(true, Ordering::Relaxed);
    }
    ok
}

/// A turn's output: sources and tokens to the socket, the final frame through the session, which
/// then takes the next ask.
struct SocketOutput<O> {
    turn_id: String,
    sink: SharedSink<O>,
    finals: mpsc::Sender<String>,
    /// The final frame went to the session (a panic after it must not send another).
    final_sent: bool,
}

#[async_trait]
impl<O: Sink<Outgoing> + Unpin + Send> TurnOutput for SocketOutput<O> {
    async fn emit(&mut self, event: TurnEvent<'_>) -> Result<(), OutputGone> {
        let json = match event {
            TurnEvent::Sources(s) => ServerFrame::Sources(s.clone()).to_json(),
            TurnEvent::Token(text) => token_json(&self.turn_id, text),
            TurnEvent::Final(frame) => {
                self.final_sent = true;
                return self
                    .finals
                    .send(frame.to_json())
                    .await
                    .map_err(|_| OutputGone);
            }
        };
        if send(&self.sink, Outgoing::Text(json)).await {
            Ok(())
        } else {
            Err(OutputGone)
        }
    }
}

/// A bug in a turn must not cost the client its answer frame or the audit trail its record.
async fn turn_panicked<O>(state: &AppState, summary: &TurnSummary, output: &SocketOutput<O>) {
    if output.final_sent {
        // The client has its answer and the session has moved on: a second final frame or a
        // `failed` record would contradict them.
        tracing::error!("turn panicked after its final frame; its record may be missing");
        return;
    }
    tracing::error!("turn panicked");
    let error = ApiError::new(ErrorCode::Internal, "the turn failed unexpectedly");
    let json = error_json(Some(summary.turn_id.clone()), error.clone());
    let _ = output.finals.send(json).await;
    let record = super::failed_record(state.llm.model(), summary, &error);
    state.recorder.record(record).await;
}

struct Running {
    turn_id: String,
    cancel: CancellationToken,
}

fn error_json(turn_id: Option<String>, error: ApiError) -> String {
    ServerFrame::Error(ErrorFrame::new(turn_id, error)).to_json()
}

/// Runs a session until the client leaves, it idles out, or shutdown completes.
pub async fn run<I, O>(state: AppState, mut incoming: I, outgoing: O)
where
    I: Stream<Item = Incoming> + Unpin + Send,
    O: Sink<Outgoing> + Unpin + Send + 'static,
{
    let outgoing: SharedSink<O> = Arc::new(SocketTx {
        sink: Mutex::new(outgoing),
        gone: AtomicBool::new(false),
    });
    let config = &state.config;
    let conversation_id = uuid::Uuid::new_v4().to_string();
    let ready = ServerFrame::Ready(Ready {
        protocol: PROTOCOL.into(),
        version: crate::VERSION.into(),
        limits: Limits {
            max_question_chars: config.chat.max_question_chars,
            max_history_messages: config.chat.max_history_messages,
            max_history_message_chars: config.chat.max_history_message_chars,
            max_frame_bytes: config.server.max_frame_bytes,
            test_mode: config.chat.test_mode,
        },
    });
    if !send(&outgoing, Outgoing::Text(ready.to_json())).await {
        return;
    }

    // Final frames of turns (one per turn). Tokens go straight to the socket: a slow reader holds
    // back its own turn (and so the upstream), never memory.
    let (turn_tx, mut turn_rx) = mpsc::channel::<String>(2);
    let mut turns = JoinSet::new();
    let mut running: Option<Running> = None;
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval(config.ping_interval());
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ping.reset();
    let shutdown = state.shutdown.clone();
    let mut draining = false;
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let mut drain_deadline = tokio::time::Instant::now();

    let close: Option<(u16, &'static str)> = loop {
        tokio::select! {
            message = incoming.next() => {
                let message = message.unwrap_or(Incoming::Closed);
                // Pongs are answered by the client's WebSocket stack, not its user: only frames
                // the application sent keep a socket from idling out.
                if matches!(message, Incoming::Text(_) | Incoming::Binary) {
                    last_heard = Instant::now();
                }
                let reply = match message {
                    Incoming::Closed => break None,
                    Incoming::TooLarge => break Some((CLOSE_TOO_BIG, "frame too large")),
                    Incoming::Heartbeat => None,
                    Incoming::Binary => Some(error_json(None, ApiError::new(
                        ErrorCode::Unsupported,
                        "binary frames are not supported; send JSON text frames",
                    ))),
                    Incoming::Text(text) => match parse_client_frame(&text) {
                        Err(e) => Some(error_json(None, e)),
                        Ok(ClientFrame::Cancel(c)) => {
                            if let Some(r) = &running
                                && c.turn_id.as_ref().is_none_or(|id| *id == r.turn_id)
                            {
                                r.cancel.cancel();
                            }
                            None
                        }
                        Ok(ClientFrame::Ask(ask)) => {
                            let started = Instant::now();
                            if draining {
                                Some(error_json(ask.turn_id, ApiError::new(
                                    ErrorCode::ShuttingDown,
                                    "the server is restarting; reconnect and ask again",
                                )))
                            } else if running.is_some() {
                                Some(error_json(ask.turn_id, ApiError::new(
                                    ErrorCode::Busy,
                                    "a turn is already running on this socket; wait for its \
                                     done frame or cancel it",
                                )))
                            } else {
                                match TurnRequest::from_ask(ask, &config.chat, &conversation_id) {
                                    Err((turn_id, e)) => Some(error_json(turn_id, e)),
                                    Ok(request) => {
                                        let cancel = CancellationToken::new();
                                        running = Some(Running {
                                            turn_id: request.turn_id.clone(),
                                            cancel: cancel.clone(),
                                        });
                                        let span = tracing::info_span!("turn",
                                            turn_id = %request.turn_id,
                                            conversation_id = %request.conversation_id);
                                        let mut output = SocketOutput {
                                            turn_id: request.turn_id.clone(),
                                            sink: Arc::clone(&outgoing),
                                            finals: turn_tx.clone(),
                                            final_sent: false,
                                        };
                                        let state = state.clone();
                                        let summary = TurnSummary::from(&request);
                                        turns.spawn(async move {
                                            let turn = run_turn(
                                                &state, request, started, cancel, &mut output,
                                            );
                                            if AssertUnwindSafe(turn).catch_unwind().await.is_err() {
                                                turn_panicked(&state, &summary, &output).await;
                                            }
                                        }.instrument(span));
                                        None
                                    }
                                }
                            }
                        }
                    },
                };
                if let Some(json) = reply
                    && !send(&outgoing, Outgoing::Text(json)).await
                {
                    break None;
                }
            }
            Some(json) = turn_rx.recv() => {
                running = None;
                if !send(&outgoing, Outgoing::Text(json)).await {
                    break None;
                }
                if draining && running.is_none() {
                    break Some((CLOSE_RESTART, "server restarting"));
                }
            }
            _ = ping.tick() => {
                if running.is_none() && last_heard.elapsed() >= config.idle_timeout() {
                    break Some((CLOSE_NORMAL, "idle timeout"));
                }
                if !send(&outgoing, Outgoing::Ping).await {
                    break None;
                }
            }
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                drain_deadline = tokio::time::Instant::now() + grace;
                if running.is_none() {
                    break Some((CLOSE_RESTART, "server restarting"));
                }
            }
            _ = sleep_until(drain_deadline), if draining && running.is_some() => {
                // Past the grace period: cancel; the turn still sends `done` (cancelled).
                if let Some(r) = &running {
                    r.cancel.cancel();
                }
                drain_deadline = tokio::time::Instant::now() + grace;
            }
            Some(joined) = turns.join_next(), if !turns.is_empty() => {
                if let Err(e) = joined {
                    tracing::error!(error = %e, "turn task failed");
                    let turn_id = running.take().map(|r| r.turn_id);
                    let json = error_json(turn_id, ApiError::new(
                        ErrorCode::Internal,
                        "the turn failed unexpectedly",
                    ));
                    if !send(&outgoing, Outgoing::Text(json)).await {
                        break None;
                    }
                }
            }
        }
    };

    // The client is gone or leaving: stop what runs (the record says cancelled) and wait for it,
    // so that no record is lost with the socket.
    if let Some(r) = &running {
        r.cancel.cancel();
    }
    drop(turn_tx);
    let mut client_ok = close.is_some();
    let forward = async {
        // Keep draining even once the client is gone: a turn's final frame must never block.
        while let Some(json) = turn_rx.recv().await {
            if client_ok {
                client_ok = send(&outgoing, Outgoing::Text(json)).await;
            }
        }
    };
    let ((), _) = tokio::join!(forward, async {
        while turns.join_next().await.is_some() {}
    });
    if let Some((code, reason)) = close
        && client_ok
    {
        send(&outgoing, Outgoing::Close(code, reason)).await;
    }
}
