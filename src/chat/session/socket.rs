//! The socket as the session sees it: transport-neutral messages in and out, close codes, the
//! shared sending half with its send timeout, a turn's output, and the byte meter that tells a
//! begun frame from a quiet socket.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use tokio::sync::{Mutex, Notify, mpsc};
use tokio::time::Duration;

use crate::chat::feedback::RecentTurns;
use crate::chat::protocol::{ServerFrame, token_json};
use crate::chat::{OutputGone, TurnEvent, TurnOutput};
use crate::store::TurnRecord;

/// What arrives from the client, transport-neutral.
#[derive(Debug, Clone, PartialEq)]
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
    /// A text frame that is not UTF-8.
    BadUtf8,
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
/// Close code: a text frame that is not UTF-8.
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// Close code: a policy was broken (a frame begun and not finished in time).
pub const CLOSE_POLICY: u16 = 1008;
/// Close code: message too big.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: service restart.
pub const CLOSE_RESTART: u16 = 1012;
/// Close code (private use, RFC 6455 §7.4.2): no valid credential, or none in time.
pub const CLOSE_UNAUTHORIZED: u16 = 4401;
/// Close code (private use): the principal already holds as many sockets as it may.
pub const CLOSE_TOO_MANY: u16 = 4429;

/// A client that takes no frame for this long is treated as gone: a stalled reader must not hold
/// the session (or a shutdown) forever.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket's sending half, shared: the session sends replies, pings and each turn's final
/// frame; the running turn writes its sources and tokens straight out, so a token wakes one task
/// (the turn's) instead of hopping through the session. An async mutex, held across one frame's
/// send: it only orders the writers of this one socket, and the send timeout bounds the hold.
/// Once a send fails, the socket is marked gone and every later send fails at once, so a client
/// that stopped reading costs one `SEND_TIMEOUT`, not one per writer.
pub(super) struct SocketTx<O> {
    pub(super) sink: Mutex<O>,
    pub(super) gone: AtomicBool,
}

pub(super) type SharedSink<O> = Arc<SocketTx<O>>;

/// Sends one frame; false when the client is gone or has taken nothing for `SEND_TIMEOUT`
/// (waiting for the socket's other writer included).
pub(super) async fn send<O: Sink<Outgoing> + Unpin>(tx: &SocketTx<O>, frame: Outgoing) -> bool {
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
pub(super) struct SocketOutput<O> {
    pub(super) turn_id: String,
    pub(super) sink: SharedSink<O>,
    pub(super) finals: mpsc::Sender<String>,
    /// The final frame went to the session (a panic after it must not send another).
    pub(super) final_sent: bool,
    /// The session's recent turns, which `feedback` can rate.
    pub(super) recent: Arc<RecentTurns>,
}

#[async_trait]
impl<O: Sink<Outgoing> + Unpin + Send> TurnOutput for SocketOutput<O> {
    fn recorded(&mut self, record: &TurnRecord) {
        self.recent.keep(record);
    }

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

/// Bytes read from a socket, and a signal at each read: how the session tells a frame that has
/// begun from a quiet socket. The transport counts; the session watches.
#[derive(Default)]
pub struct Meter {
    read: AtomicU64,
    notify: Notify,
}

impl Meter {
    /// Counts `n` bytes just read.
    pub fn add(&self, n: usize) {
        if n > 0 {
            self.read.fetch_add(n as u64, Ordering::Relaxed);
            self.notify.notify_one();
        }
    }

    /// Bytes read so far.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Resolves after the next read (or at once if one happened since the last call).
    pub async fn bytes_arrived(&self) {
        self.notify.notified().await;
    }
}
