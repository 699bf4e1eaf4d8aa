//! One WebSocket session: proves who the client is (when the service needs it), then reads client
//! frames, runs at most one turn at a time within the client's limits, forwards the turn's frames,
//! keeps the socket alive and closes it when idle, misbehaving, or at shutdown. Generic over the
//! transport so it can be driven without a network.

use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use futures::{FutureExt, Sink, Stream, StreamExt};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio::time::{Duration, Interval, MissedTickBehavior, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::feedback::{Rater, RecentTurns};
use super::protocol::{
    Ask, Cancel, ClientFrame, ErrorFrame, Feedback, FeedbackSaved, Limits, PROTOCOL, Ready,
    ServerFrame, parse_client_frame,
};
use super::{TurnOutcome, TurnRequest, TurnSummary, run_turn};
use crate::auth::{AuthError, Principal};
use crate::error::{ApiError, ErrorCode};
use crate::limits::{Refusals, SocketPlace};
use crate::state::AppState;

mod socket;

pub use socket::{
    CLOSE_INVALID_DATA, CLOSE_NORMAL, CLOSE_POLICY, CLOSE_RESTART, CLOSE_TOO_BIG, CLOSE_TOO_MANY,
    CLOSE_UNAUTHORIZED, Incoming, Meter, Outgoing,
};
use socket::{SharedSink, SocketOutput, SocketTx, send};

/// Who is on the other end of a socket.
pub struct Peer {
    /// The client's address (behind trusted proxies, the forwarded one).
    pub address: IpAddr,
    /// Whom it acts for, when the upgrade proved it; `None`: the first frame must.
    pub principal: Option<Principal>,
    /// Its place among the sockets, given back when the session ends.
    pub place: Option<SocketPlace>,
    /// Bytes read from the socket, to time frames that begin and never finish.
    pub meter: Option<Arc<Meter>>,
    /// The upgrade's W3C trace context, which the session's turns continue.
    pub trace_parent: Option<opentelemetry::Context>,
}

impl Peer {
    /// A client at `address` that proved nothing yet (tests).
    pub fn at(address: IpAddr) -> Self {
        Self {
            address,
            principal: None,
            place: None,
            meter: None,
            trace_parent: None,
        }
    }
}

/// How a session ended, with the transport handed back (to drain a too-large frame).
pub struct Closing<I, O> {
    /// The close code sent, if one was.
    pub code: Option<u16>,
    /// The incoming half.
    pub incoming: I,
    /// The outgoing half, when no turn task still holds it.
    pub outgoing: Option<O>,
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
    let frame = outcome.frame().to_json();
    state
        .recorder
        .record(outcome.record(state.llm.model()))
        .await;
    let _ = output.finals.send(frame).await;
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
    address: IpAddr,
    principal: Principal,
    place: Option<SocketPlace>,
    meter: Option<Arc<Meter>>,
    trace_parent: Option<opentelemetry::Context>,
    /// The conversation of asks that name none.
    conversation_id: String,
    finals_tx: mpsc::Sender<String>,
    finals_rx: mpsc::Receiver<String>,
    turns: JoinSet<()>,
    running: Option<Running>,
    last_heard: tokio::time::Instant,
    /// Bytes read when the last whole frame arrived, and when a frame begun since must be done.
    frame: (u64, Option<tokio::time::Instant>),
    draining: bool,
    drain_deadline: tokio::time::Instant,
    /// The socket's recent turns, for `feedback`.
    recent: Arc<RecentTurns>,
    /// Feedback frames the socket may still send: a few per turn, so a client cannot turn the
    /// socket into a stream of record writes.
    feedback_left: u32,
}

/// Feedback frames a socket may send before its first turn, and more per turn.
const FEEDBACK_ALLOWANCE: (u32, u32) = (16, 4);

/// Runs a session until the client leaves, it idles out, it misbehaves, or shutdown completes.
pub async fn run<I, O>(state: AppState, peer: Peer, mut incoming: I, outgoing: O) -> Closing<I, O>
where
    I: Stream<Item = Incoming> + Unpin + Send,
    O: Sink<Outgoing> + Unpin + Send + 'static,
{
    state.metrics.session_opened();
    let metrics = Arc::clone(&state.metrics);
    let tx = Arc::new(SocketTx {
        sink: Mutex::new(outgoing),
        gone: AtomicBool::new(false),
    });
    let close = match admit(&state, &peer, &tx, &mut incoming).await {
        Ok(principal) => {
            let mut session = Session::new(state, peer, principal, Arc::clone(&tx));
            match session.claim_place() {
                Some(close) => Some(close),
                None if !session.send_text(session.ready()).await => None,
                None => {
                    let close = session.serve(&mut incoming).await;
                    session.close(close).await
                }
            }
        }
        Err(close) => close,
    };
    if let Some((code, reason)) = close {
        send(&tx, Outgoing::Close(code, reason)).await;
    }
    metrics.session_closed(close.map(|(code, _)| code));
    Closing {
        code: close.map(|(code, _)| code),
        incoming,
        outgoing: Arc::try_unwrap(tx).ok().map(|tx| tx.sink.into_inner()),
    }
}

/// The principal the socket acts for: proven by the upgrade, or by a first `auth` frame within
/// `RAGCHAT_AUTH_TIMEOUT_SECS`. Anything else closes the socket with 4401, no detail.
async fn admit<I, O>(
    state: &AppState,
    peer: &Peer,
    tx: &SocketTx<O>,
    incoming: &mut I,
) -> Result<Principal, Option<Close>>
where
    I: Stream<Item = Incoming> + Unpin,
    O: Sink<Outgoing> + Unpin,
{
    if let Some(principal) = &peer.principal {
        return Ok(principal.clone());
    }
    if !state.auth.required() {
        return Ok(Principal::anonymous());
    }
    let wait = state.config.auth.auth_timeout;
    let first = loop {
        match tokio::time::timeout(wait, incoming.next()).await {
            Ok(Some(Incoming::Heartbeat)) => continue,
            Ok(Some(Incoming::Text(text))) => break Some(text),
            Ok(Some(Incoming::Closed) | None) => return Err(None),
            Ok(Some(_)) | Err(_) => break None,
        }
    };
    let result = match first.as_deref().map(parse_client_frame) {
        Some(Ok(ClientFrame::Auth(auth))) => state.auth.from_token(&auth.token).await,
        Some(_) => Err(AuthError::Refused("the first frame was not `auth`".into())),
        None => Err(AuthError::Missing),
    };
    match result {
        Ok(principal) => Ok(principal),
        Err(e) => {
            let why = match &e {
                AuthError::Missing => format!("no auth frame within {wait:?}"),
                other => other.to_string(),
            };
            state.refusals.note(Refusals::AUTH, peer.address, &why);
            // Tell a well-behaved client why it is closed; the code says it too.
            let refusal = ApiError::new(ErrorCode::Unauthorized, "missing or invalid credentials");
            send(tx, Outgoing::Text(error_json(None, refusal))).await;
            Err(Some((CLOSE_UNAUTHORIZED, "unauthorized")))
        }
    }
}

impl<O: Sink<Outgoing> + Unpin + Send + 'static> Session<O> {
    fn new(state: AppState, peer: Peer, principal: Principal, tx: SharedSink<O>) -> Self {
        // Final frames of turns (one per turn). Tokens go straight to the socket: a slow reader
        // holds back its own turn (and so the upstream), never memory.
        let (finals_tx, finals_rx) = mpsc::channel::<String>(2);
        let read = peer.meter.as_ref().map_or(0, |m| m.read());
        Self {
            state,
            tx,
            address: peer.address,
            principal,
            place: peer.place,
            meter: peer.meter,
            trace_parent: peer.trace_parent,
            conversation_id: uuid::Uuid::new_v4().to_string(),
            finals_tx,
            finals_rx,
            turns: JoinSet::new(),
            running: None,
            last_heard: tokio::time::Instant::now(),
            frame: (read, None),
            draining: false,
            drain_deadline: tokio::time::Instant::now(),
            recent: Arc::default(),
            feedback_left: FEEDBACK_ALLOWANCE.0,
        }
    }

    /// Counts the socket against its principal's; a close frame when it is one too many.
    fn claim_place(&mut self) -> Option<Close> {
        let place = self.place.as_mut()?;
        if self.state.limits.claim_principal(place, &self.principal) {
            return None;
        }
        self.state.refusals.note(
            Refusals::SOCKETS,
            self.address,
            &format!("{} holds too many sockets", self.principal),
        );
        Some((CLOSE_TOO_MANY, "too many sockets for this principal"))
    }

    fn ready(&self) -> String {
        let config = &self.state.config;
        ServerFrame::Ready(Ready {
            protocol: PROTOCOL.into(),
            version: crate::VERSION.into(),
            principal: self.principal.id().to_owned(),
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
        let meter = self.meter.clone();
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
                () = bytes_arrived(meter.as_deref()) => self.on_bytes(),
                _ = sleep_until(self.frame.1.unwrap_or_else(tokio::time::Instant::now)),
                    if self.frame.1.is_some() => self.on_frame_overdue(),
                _ = ping.tick() => self.on_tick().await,
            };
            if let Next::End(close) = next {
                return close;
            }
        }
    }

    async fn on_message(&mut self, message: Incoming) -> Next {
        // A whole frame arrived: whatever was read so far was part of a frame that is done.
        if let Some(meter) = &self.meter {
            self.frame = (meter.read(), None);
        }
        // Pongs are answered by the client's WebSocket stack, not its user: only frames the
        // application sent keep a socket from idling out.
        if matches!(message, Incoming::Text(_) | Incoming::Binary) {
            self.last_heard = tokio::time::Instant::now();
        }
        let reply = match message {
            Incoming::Closed => return Next::End(None),
            Incoming::TooLarge => {
                self.refused(Refusals::FRAME, "a frame over RAGCHAT_MAX_FRAME_BYTES");
                return Next::End(Some((CLOSE_TOO_BIG, "frame too large")));
            }
            Incoming::BadUtf8 => {
                self.refused(Refusals::FRAME, "a text frame that is not UTF-8");
                return Next::End(Some((CLOSE_INVALID_DATA, "text frames must be UTF-8")));
            }
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
                Ok(ClientFrame::Feedback(feedback)) => Some(self.on_feedback(feedback).await),
                // Already known; a page that keeps a token sends it whatever the server needs.
                Ok(ClientFrame::Auth(_)) => None,
            },
        };
        self.reply(reply).await
    }

    fn refused(&self, kind: usize, why: &str) {
        self.state.refusals.note(kind, self.address, why);
    }

    /// Bytes arrived: if they are not a whole frame yet, the frame must finish in time.
    fn on_bytes(&mut self) -> Next {
        if let Some(meter) = &self.meter
            && meter.read() > self.frame.0
            && self.frame.1.is_none()
        {
            let timeout = self.state.config.limits.frame_timeout;
            self.frame.1 = Some(tokio::time::Instant::now() + timeout);
        }
        Next::Continue
    }

    /// A frame began and did not finish in time: its bytes are held for nothing.
    fn on_frame_overdue(&mut self) -> Next {
        self.refused(Refusals::FRAME, "a frame begun and not finished in time");
        Next::End(Some((CLOSE_POLICY, "frame not finished in time")))
    }

    fn on_cancel(&self, cancel: &Cancel) {
        if let Some(r) = &self.running
            && cancel.turn_id.as_ref().is_none_or(|id| *id == r.turn_id)
        {
            r.cancel.cancel();
        }
    }

    /// Records a rating: `feedback_saved`, or an error with `feedback_for` that names no turn
    /// (an error naming a turn would end it for the client).
    async fn on_feedback(&mut self, feedback: Feedback) -> String {
        let turn_id = feedback.turn_id.clone();
        let refused = |e: ApiError| {
            ServerFrame::Error(ErrorFrame {
                feedback_for: Some(turn_id.clone()),
                ..ErrorFrame::new(None, e)
            })
            .to_json()
        };
        if self.feedback_left == 0 {
            let e = ApiError::new(
                ErrorCode::RateLimited,
                "too many feedback frames on this socket; ask another question first",
            );
            self.refused(Refusals::RATE, &e.message);
            return refused(e);
        }
        self.feedback_left -= 1;
        let rater = Rater {
            principal: &self.principal,
            conversation_id: &self.conversation_id,
            running: self.running.as_ref().map(|r| r.turn_id.as_str()),
            recent: &self.recent,
        };
        match super::feedback::record(&self.state, &rater, feedback).await {
            Ok(()) => ServerFrame::FeedbackSaved(FeedbackSaved {
                turn_id: turn_id.clone(),
            })
            .to_json(),
            Err(e) => refused(e),
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
        } else if let Err(e) = self.state.limits.check_turn(&self.principal, self.address) {
            self.refused(Refusals::RATE, &e.message);
            e
        } else {
            let chat = &self.state.config.chat;
            let budget = self.state.config.limits.max_question_tokens;
            let principal = self.principal.clone();
            match TurnRequest::from_ask(ask, chat, &self.conversation_id, principal, budget) {
                Err((turn_id, e)) => return Some(error_json(turn_id, e)),
                Ok(request) => {
                    self.start_turn(request, started);
                    return None;
                }
            }
        };
        // A refusal never names the running turn: an error with its id would end it for the
        // client while it goes on.
        let running = self.running.as_ref().map(|r| r.turn_id.as_str());
        let turn_id = ask.turn_id.filter(|id| Some(id.as_str()) != running);
        Some(error_json(turn_id, refusal))
    }

    fn start_turn(&mut self, request: TurnRequest, started: Instant) {
        let cancel = CancellationToken::new();
        self.running = Some(Running {
            turn_id: request.turn_id.clone(),
            cancel: cancel.clone(),
        });
        let span = super::turn_span(&request, self.state.llm.model());
        if let Some(parent) = &self.trace_parent {
            // The upgrade's `traceparent`: the front end's trace goes on into the turn.
            let _ = span.set_parent(parent.clone());
        }
        let mut output = SocketOutput {
            turn_id: request.turn_id.clone(),
            sink: Arc::clone(&self.tx),
            finals: self.finals_tx.clone(),
            final_sent: false,
            recent: Arc::clone(&self.recent),
        };
        self.feedback_left = (self.feedback_left + FEEDBACK_ALLOWANCE.1).min(64);
        let state = self.state.clone();
        let (principal, address) = (self.principal.clone(), self.address);
        let summary = TurnSummary::from(&request);
        self.turns.spawn(async move {
            // A place among the turns streaming at once, or `busy` (and no turn, no record).
            let place = match state.limits.turn_place().await {
                Ok(place) => place,
                Err(busy) => {
                    span.in_scope(|| {
                        state.refusals.note(Refusals::BUSY, address, &busy.message);
                    });
                    let json = error_json(Some(summary.turn_id), busy);
                    let _ = output.finals.send(json).await;
                    return;
                }
            };
            // Not instrumented as a whole: `run_turn` enters the span around its phases.
            let turn = run_turn(&state, request, started, cancel, &mut output, &span);
            match AssertUnwindSafe(turn).catch_unwind().await {
                Ok(spent) => state.limits.charge(&principal, address, spent),
                Err(_) => {
                    turn_panicked(&state, summary, &output)
                        .instrument(span)
                        .await;
                }
            }
            drop(place);
        });
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
        let idle = self.last_heard.elapsed() >= self.state.config.server.idle_timeout();
        if self.running.is_none() && idle {
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
    /// it, so that no record is lost with the socket. Returns the close frame to send, if the
    /// client is still there to read it.
    async fn close(self, close: Option<Close>) -> Option<Close> {
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
        close.filter(|_| client_ok)
    }
}

/// Resolves when bytes arrive on a metered socket; never on an unmetered one.
async fn bytes_arrived(meter: Option<&Meter>) {
    match meter {
        Some(meter) => meter.bytes_arrived().await,
        None => std::future::pending().await,
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
