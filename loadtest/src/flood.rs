//! One abusive principal: a few sockets sending `ask` frames at a fixed total rate whatever the
//! answers, counting what comes back (`rate_limited`, `busy`, answers, closes). `make bench`
//! runs it beside well-behaved streams to show the limits keep a flood from hurting them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, parse_frame};
use crate::sockets::Sources;

/// A flood to send.
#[derive(Debug, Clone)]
pub struct Flood {
    pub label: String,
    pub url: String,
    pub addr: SocketAddr,
    /// Sockets to try to open (all with the same credential).
    pub sockets: usize,
    /// Asks per second, over all sockets.
    pub rate: f64,
    pub duration: Duration,
    pub sources: Sources,
    pub bearer: Option<String>,
    pub connect_timeout: Duration,
}

/// What the flood sent and what came back.
#[derive(Debug, Default, Serialize)]
pub struct FloodReport {
    pub label: String,
    pub mode: &'static str,
    pub target: String,
    pub sockets_requested: usize,
    pub sockets_opened: u64,
    /// Why sockets did not open (`closed 4429: …`, `handshake: … 429 …`), with counts.
    pub connect_failures: BTreeMap<String, u64>,
    pub elapsed_secs: f64,
    pub asks_sent: u64,
    pub asks_per_sec: f64,
    /// Final frames by kind: `done`, `error:rate_limited`, `error:busy`, …; and `closed <code>`
    /// for sockets the server closed during the flood.
    pub replies: BTreeMap<String, u64>,
}

impl FloodReport {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} [flood] {} — {} of {} sockets opened, {:.1} s: {} asks sent ({:.0}/s)",
            self.label,
            self.target,
            self.sockets_opened,
            self.sockets_requested,
            self.elapsed_secs,
            self.asks_sent,
            self.asks_per_sec
        );
        for (why, n) in &self.connect_failures {
            let _ = writeln!(out, "  not opened: {n} × {why}");
        }
        for (kind, n) in &self.replies {
            let _ = writeln!(out, "  reply {kind}: {n}");
        }
        out
    }
}

#[derive(Default)]
struct Counts {
    opened: u64,
    failures: BTreeMap<String, u64>,
    sent: u64,
    replies: BTreeMap<String, u64>,
}

/// Opens the sockets, sends asks at the rate for the duration, waits a moment for the last
/// replies, and reports.
pub async fn flood(load: Flood) -> FloodReport {
    let start = Instant::now();
    let counts = Arc::new(Mutex::new(Counts::default()));
    let sockets = load.sockets.max(1);
    let per_socket = Duration::from_secs_f64(sockets as f64 / load.rate.max(0.001));
    let stop = start + load.duration;
    let mut set = JoinSet::new();
    for i in 0..sockets {
        let (load, counts) = (load.clone(), counts.clone());
        set.spawn(async move {
            let count = |f: &mut dyn FnMut(&mut Counts)| {
                f(&mut counts.lock().unwrap_or_else(PoisonError::into_inner));
            };
            let ws = client::connect_ws(
                &load.url,
                load.addr,
                load.sources.pick(i),
                load.bearer.as_deref(),
                16 * 1024,
                load.connect_timeout,
            )
            .await;
            let ws = match ws {
                Ok(ws) => ws,
                Err(e) => {
                    count(&mut |c| *c.failures.entry(e.0.clone()).or_default() += 1);
                    return;
                }
            };
            count(&mut |c| c.opened += 1);
            let (mut tx, mut rx) = ws.split();
            let mut tick = tokio::time::interval(per_socket);
            tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
            let mut n = 0u64;
            let closed = loop {
                tokio::select! {
                    _ = tick.tick(), if Instant::now() < stop => {
                        let ask = serde_json::json!({
                            "type": "ask",
                            "question": "What is the harbour lantern made of?",
                            "turn_id": format!("flood-{i}-{n}"),
                        });
                        n += 1;
                        if tx.send(Message::text(ask.to_string())).await.is_err() {
                            break Some("send failed".to_owned());
                        }
                        count(&mut |c| c.sent += 1);
                    }
                    () = tokio::time::sleep_until((stop + Duration::from_secs(2)).into()) => break None,
                    msg = rx.next() => match msg {
                        Some(Ok(Message::Text(t))) => {
                            let Some(f) = parse_frame(&t) else { continue };
                            let kind = match (f.kind.as_ref(), f.code.as_deref()) {
                                ("error", Some(code)) => format!("error:{code}"),
                                ("done", _) => "done".to_owned(),
                                _ => continue,
                            };
                            count(&mut |c| *c.replies.entry(kind.clone()).or_default() += 1);
                        }
                        Some(Ok(Message::Close(frame))) => {
                            break Some(frame.map_or("closed".into(), |f| format!("closed {}", u16::from(f.code))));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => break Some(format!("socket error: {e}")),
                        None => break Some("closed".to_owned()),
                    },
                }
            };
            if let Some(why) = closed {
                count(&mut |c| *c.replies.entry(why.clone()).or_default() += 1);
            }
            let _ = tx.close().await;
        });
    }
    while set.join_next().await.is_some() {}
    let elapsed = load.duration.as_secs_f64();
    let c = counts.lock().unwrap_or_else(PoisonError::into_inner);
    FloodReport {
        label: load.label.clone(),
        mode: "flood",
        target: load.url.clone(),
        sockets_requested: sockets,
        sockets_opened: c.opened,
        connect_failures: c.failures.clone(),
        elapsed_secs: elapsed,
        asks_sent: c.sent,
        asks_per_sec: if elapsed > 0.0 {
            (c.sent as f64 / elapsed).round()
        } else {
            0.0
        },
        replies: c.replies.clone(),
    }
}
