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
use tokio::time::{Duration, Interval, MissedTickBehavior, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::protocol::{
    Ask, Cancel, ClientFrame, ErrorFrame, Limits, PROTOCOL, Ready, ServerFrame, parse_client_frame,
    token_json,
};
use super::{OutputGone, TurnEvent, TurnOutcome, TurnOutput, TurnRequest, TurnSummary, run_turn};
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

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
async fn turn_panicked<O>(state: &AppState, summary: TurnSummary, output: &SocketOutput<O>) {
    if output.final_sent {
        // The client has its answer and the session has moved on: a second final frame or a
        // `failed` record would contradict them.
        tracing::error!("turn panicked after its final frame; its record may be missing");
        return;
    }
    tracing::error!("turn panicked");
    let outcome = TurnOutcome::panicked(summary);
    let _ = output.finals.send(outcome.frame().to_json()).await;
    state
        .recorder
        .record(outcome.record(state.llm.model()))
        .await;
}

struct Running {
    turn_id: String,
    cancel: CancellationToken,
}

fn error_json(turn_id: Option<String>, error: ApiError) -> String {
    ServerFrame::Error(ErrorFrame::new(turn_id, error)).to_json()
}

/// A close frame's code and reason.
type Close = (u16, &'static str);

/// What the session does after handling an event.
enum Next {
    /// Go on.
    Continue,
    /// End the session, closing with this frame if the client is still there.
    End(Option<Close>),
}

/// One socket's session: at most one turn at a time, whose final frame comes back through
/// `finals`.
struct Session<O> {
    state: AppState,
    tx: SharedSink<O>,
    /// The conversation of asks that name none.
    conversation_id: String,
    finals_tx: mpsc::Sender<String>,
    finals_rx: mpsc::Receiver<String>,
    turns: JoinSet<()>,
    running: Option<Running>,
    last_heard: tokio::time::Instant,
    draining: bool,
    drain_deadline: tokio::time::Instant,
}

/// Runs a session until the client leaves, it idles out, or shutdown completes.
pub async fn run<I, O>(state: AppState, mut incoming: I, outgoing: O)
where
    I: Stream<Item = Incoming> + Unpin + Send,
    O: Sink<Outgoing> + Unpin + Send + 'static,
{
    let mut session = Session::new(state, outgoing);
    if !session.send_text(session.ready()).await {
        return;
    }
    let close = session.serve(&mut incoming).await;
    session.close(close).await;
}

impl<O: Sink<Outgoing> + Unpin + Send + 'static> Session<O> {
    fn new(state: AppState, outgoing: O) -> Self {
        // Final frames of turns (one per turn). Tokens go straight to the socket: a slow reader
        // holds back its own turn (and so the upstream), never memory.
        let (finals_tx, finals_rx) = mpsc::channel::<String>(2);
        Self {
            state,
            tx: Arc::new(SocketTx {
                sink: Mutex::new(outgoing),
                gone: AtomicBool::new(false),
            }),
            conversation_id: uuid::Uuid::new_v4().to_string(),
            finals_tx,
            finals_rx,
            turns: JoinSet::new(),
            running: None,
            last_heard: tokio::time::Instant::now(),
            draining: false,
            drain_deadline: tokio::time::Instant::now(),
        }
    }

    fn ready(&self) -> String {
        let config = &self.state.config;
        ServerFrame::Ready(Ready {
            protocol: PROTOCOL.into(),
            version: crate::VERSION.into(),
            limits: Limits {
                max_question_chars: config.chat.max_question_chars,
                max_history_messages: config.chat.max_history_messages,
                max_history_message_chars: config.chat.max_history_message_chars,
                max_frame_bytes: config.server.max_frame_bytes,
                test_mode: config.chat.test_mode,
            },
        })
        .to_json()
    }

    async fn send_text(&self, json: String) -> bool {
        send(&self.tx, Outgoing::Text(json)).await
    }

    /// Sends `json` if there is something to send; ends the session when the client is gone.
    async fn reply(&self, json: Option<String>) -> Next {
        match json {
            Some(json) => {
                if self.send_text(json).await {
                    Next::Continue
                } else {
                    Next::End(None)
                }
            }
            None => Next::Continue,
        }
    }

    /// The event loop: client frames, the running turn's final frame, keep-alive, shutdown.
    async fn serve<I: Stream<Item = Incoming> + Unpin>(
        &mut self,
        incoming: &mut I,
    ) -> Option<Close> {
        let mut ping = keep_alive(self.state.config.server.ping_interval());
        let shutdown = self.state.shutdown.clone();
        loop {
            // Biased: shutdown is seen before a frame that arrived with it (a new ask then gets
            // `shutting_down`), and a turn's end before more client frames.
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled(), if !self.draining => self.on_shutdown(),
                _ = sleep_until(self.drain_deadline), if self.draining && self.running.is_some() => {
                    self.on_grace_over()
                }
                Some(json) = self.finals_rx.recv() => self.on_final(json).await,
                Some(joined) = self.turns.join_next(), if !self.turns.is_empty() => {
                    self.on_joined(joined).await
                }
                message = incoming.next() => {
                    self.on_message(message.unwrap_or(Incoming::Closed)).await
                }
                _ = ping.tick() => self.on_tick().await,
            };
            if let Next::End(close) = next {
                return close;
            }
        }
    }

    async fn on_message(&mut self, message: Incoming) -> Next {
        // Pongs are answered by the client's WebSocket stack, not its user: only frames the
        // application sent keep a socket from idling out.
        if matches!(message, Incoming::Text(_) | Incoming::Binary) {
            self.last_heard = tokio::time::Instant::now();
        }
        let reply = match message {
            Incoming::Closed => return Next::End(None),
            Incoming::TooLarge => return Next::End(Some((CLOSE_TOO_BIG, "frame too large"))),
            Incoming::Heartbeat => None,
            Incoming::Binary => Some(error_json(
                None,
                ApiError::new(
                    ErrorCode::Unsupported,
                    "binary frames are not supported; send JSON text frames",
                ),
            )),
            Incoming::Text(text) => match parse_client_frame(&text) {
                Err(e) => Some(error_json(None, e)),
                Ok(ClientFrame::Cancel(cancel)) => {
                    self.on_cancel(&cancel);
                    None
                }
                Ok(ClientFrame::Ask(ask)) => self.on_ask(ask),
            },
        };
        self.reply(reply).await
    }

    fn on_cancel(&self, cancel: &Cancel) {
        if let Some(r) = &self.running
            && cancel.turn_id.as_ref().is_none_or(|id| *id == r.turn_id)
        {
            r.cancel.cancel();
        }
    }

    /// Starts a turn, or says why not.
    fn on_ask(&mut self, ask: Ask) -> Option<String> {
        let started = Instant::now();
        let refusal = if self.draining {
            ApiError::new(
                ErrorCode::ShuttingDown,
                "the server is restarting; reconnect and ask again",
            )
        } else if self.running.is_some() {
            ApiError::new(
                ErrorCode::Busy,
                "a turn is already running on this socket; wait for its done frame or cancel it",
            )
        } else {
            match TurnRequest::from_ask(ask, &self.state.config.chat, &self.conversation_id) {
                Err((turn_id, e)) => return Some(error_json(turn_id, e)),
                Ok(request) => {
                    self.start_turn(request, started);
                    return None;
                }
            }
        };
        Some(error_json(ask.turn_id, refusal))
    }

    fn start_turn(&mut self, request: TurnRequest, started: Instant) {
        let cancel = CancellationToken::new();
        self.running = Some(Running {
            turn_id: request.turn_id.clone(),
            cancel: cancel.clone(),
        });
        let span = tracing::info_span!("turn",
            turn_id = %request.turn_id,
            conversation_id = %request.conversation_id);
        let mut output = SocketOutput {
            turn_id: request.turn_id.clone(),
            sink: Arc::clone(&self.tx),
            finals: self.finals_tx.clone(),
            final_sent: false,
        };
        let state = self.state.clone();
        let summary = TurnSummary::from(&request);
        self.turns.spawn(
            async move {
                let turn = run_turn(&state, request, started, cancel, &mut output);
                if AssertUnwindSafe(turn).catch_unwind().await.is_err() {
                    turn_panicked(&state, summary, &output).await;
                }
            }
            .instrument(span),
        );
    }

    /// The running turn's final frame: it ends the turn; a draining session then closes.
    async fn on_final(&mut self, json: String) -> Next {
        self.running = None;
        if !self.send_text(json).await {
            return Next::End(None);
        }
        if self.draining {
            return Next::End(Some((CLOSE_RESTART, "server restarting")));
        }
        Next::Continue
    }

    async fn on_tick(&self) -> Next {
        if self.running.is_none()
            && self.last_heard.elapsed() >= self.state.config.server.idle_timeout()
        {
            return Next::End(Some((CLOSE_NORMAL, "idle timeout")));
        }
        if send(&self.tx, Outgoing::Ping).await {
            Next::Continue
        } else {
            Next::End(None)
        }
    }

    /// Shutdown began: no new asks; the running turn gets the grace period.
    fn on_shutdown(&mut self) -> Next {
        self.draining = true;
        self.drain_deadline =
            tokio::time::Instant::now() + self.state.config.server.shutdown_grace();
        if self.running.is_none() {
            return Next::End(Some((CLOSE_RESTART, "server restarting")));
        }
        Next::Continue
    }

    /// Past the grace period: cancel; the turn still sends `done` (cancelled).
    fn on_grace_over(&mut self) -> Next {
        if let Some(r) = &self.running {
            r.cancel.cancel();
        }
        self.drain_deadline =
            tokio::time::Instant::now() + self.state.config.server.shutdown_grace();
        Next::Continue
    }

    /// A turn task ended; one that failed outside its own panic guard still answers `internal`.
    async fn on_joined(&mut self, joined: Result<(), tokio::task::JoinError>) -> Next {
        let Err(e) = joined else {
            return Next::Continue;
        };
        tracing::error!(error = %e, "turn task failed");
        let turn_id = self.running.take().map(|r| r.turn_id);
        let error = ApiError::new(ErrorCode::Internal, "the turn failed unexpectedly");
        self.reply(Some(error_json(turn_id, error))).await
    }

    /// The client is gone or leaving: stop what runs (the record says cancelled) and wait for
    /// it, so that no record is lost with the socket; then close.
    async fn close(self, close: Option<Close>) {
        let Self {
            tx,
            finals_tx,
            mut finals_rx,
            mut turns,
            running,
            ..
        } = self;
        if let Some(r) = &running {
            r.cancel.cancel();
        }
        drop(finals_tx);
        let mut client_ok = close.is_some();
        let forward = async {
            // Keep draining even once the client is gone: a turn's final frame must never block.
            while let Some(json) = finals_rx.recv().await {
                if client_ok {
                    client_ok = send(&tx, Outgoing::Text(json)).await;
                }
            }
        };
        let ((), _) = tokio::join!(forward, async {
            while turns.join_next().await.is_some() {}
        });
        if let Some((code, reason)) = close
            && client_ok
        {
            send(&tx, Outgoing::Close(code, reason)).await;
        }
    }
}

/// The keep-alive ticker: its first tick one interval from now.
fn keep_alive(every: Duration) -> Interval {
    let mut ping = tokio::time::interval(every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ping.reset();
    ping
}

#[cfg(test)]
mod tests;
