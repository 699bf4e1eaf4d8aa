//! Drives a load: ramps N clients that take turns (over ragchat's WebSocket or straight at the
//! simulator), or opens and holds N idle sockets; collects one [`Stats`] and makes the report.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::task::JoinSet;

use crate::client::{self, SocketState};
use crate::questions::Questions;
use crate::sockets::Sources;
use crate::stats::{IdleReport, Report, Stats, TurnEnd, TurnRecorder, rss_kib};

/// Where the turns go.
#[derive(Debug, Clone)]
pub enum Target {
    /// ragchat's `/ws`.
    Ws { url: String, addr: SocketAddr },
    /// An OpenAI-compatible base URL (`…/v1`); turns POST to `{base}/chat/completions`.
    Direct { base: String },
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Ws { url, .. } => url.clone(),
            Target::Direct { base } => format!("{}/chat/completions", base.trim_end_matches('/')),
        }
    }
}

/// A load to drive.
#[derive(Debug, Clone)]
pub struct Load {
    pub label: String,
    pub target: Target,
    pub clients: usize,
    pub ramp: Duration,
    /// Stop starting turns this long after the ramp ends (running turns finish).
    pub duration: Option<Duration>,
    pub turns_per_client: Option<u64>,
    /// Turns started before this much time has passed are not recorded.
    pub warmup: Duration,
    pub think: Duration,
    pub cancel_share: f64,
    pub cancel_after_tokens: u64,
    pub questions: Questions,
    pub sources: Sources,
    /// Bearer tokens, client `i` using token `i % len` (empty: none).
    pub bearer: Vec<String>,
    pub turn_timeout: Duration,
    /// Direct mode: model name and `max_tokens`.
    pub model: String,
    pub max_tokens: Option<u32>,
    pub progress: bool,
}

struct Shared {
    load: Load,
    stats: Mutex<Stats>,
    start: Instant,
    measure_from: Instant,
    deadline: Option<Instant>,
    active: AtomicUsize,
    turns: AtomicU64,
    http: Option<reqwest::Client>,
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn more_turns(&self, done: u64) -> bool {
        let l = &self.load;
        if l.turns_per_client.is_some_and(|n| done >= n) {
            return false;
        }
        self.deadline.is_none_or(|d| Instant::now() < d)
    }
}

/// Whether turn `turn` of `client` is one to cancel: a deterministic share of all turns.
pub fn cancels(share: f64, client: usize, turn: u64) -> bool {
    if share <= 0.0 {
        return false;
    }
    // Golden-ratio low-discrepancy sequence over the global turn order.
    let k = (client as u64).wrapping_mul(1_000_003).wrapping_add(turn);
    let x = (k as f64 * 0.618_033_988_749_895).fract();
    x < share
}

/// Runs the turns and returns the report.
pub async fn turns(load: Load) -> Report {
    let start = Instant::now();
    let deadline = load.duration.map(|d| start + load.ramp + d);
    let http = match &load.target {
        Target::Direct { .. } => reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .ok(),
        Target::Ws { .. } => None,
    };
    let shared = Arc::new(Shared {
        measure_from: start + load.warmup,
        load,
        stats: Mutex::new(Stats::default()),
        start,
        deadline,
        active: AtomicUsize::new(0),
        turns: AtomicU64::new(0),
        http,
    });
    let clients = shared.load.clients;
    let mut set = JoinSet::new();
    for id in 0..clients {
        let shared = shared.clone();
        let delay = shared.load.ramp.mul_f64(id as f64 / clients.max(1) as f64);
        set.spawn(async move {
            tokio::time::sleep_until((shared.start + delay).into()).await;
            shared.active.fetch_add(1, Ordering::Relaxed);
            match shared.load.target.clone() {
                Target::Ws { url, addr } => ws_client(&shared, id, &url, addr).await,
                Target::Direct { base } => direct_client(&shared, id, &base).await,
            }
            shared.active.fetch_sub(1, Ordering::Relaxed);
        });
    }
    let progress = shared.load.progress.then(|| {
        let shared = shared.clone();
        // Aborted below, once every client is done.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                let (errors, lost) = {
                    let s = shared.stats();
                    (s.errors.values().sum::<u64>(), s.turns_lost)
                };
                eprintln!(
                    "[{:>6.1}s] {} active clients, {} turns, {} errors, {} lost",
                    shared.start.elapsed().as_secs_f64(),
                    shared.active.load(Ordering::Relaxed),
                    shared.turns.load(Ordering::Relaxed),
                    errors,
                    lost
                );
            }
        })
    });
    while set.join_next().await.is_some() {}
    if let Some(p) = progress {
        p.abort();
    }
    let end = Instant::now();
    let measured = end.saturating_duration_since(shared.measure_from);
    let l = &shared.load;
    let mode = match l.target {
        Target::Ws { .. } => "ws",
        Target::Direct { .. } => "direct",
    };
    let stats = shared.stats();
    Report::new(
        &l.label,
        mode,
        &l.target.describe(),
        l.clients,
        measured.as_secs_f64(),
        &stats,
    )
}

fn record(shared: &Shared, rec: &TurnRecorder, end: &TurnEnd) {
    shared.turns.fetch_add(1, Ordering::Relaxed);
    if rec_started_in_window(shared, rec) {
        shared.stats().record(rec, end, Instant::now());
    }
}

fn rec_started_in_window(shared: &Shared, rec: &TurnRecorder) -> bool {
    rec.started() >= shared.measure_from
}

async fn ws_client(shared: &Shared, id: usize, url: &str, addr: SocketAddr) {
    let l = &shared.load;
    let mut rec = TurnRecorder::default();
    let mut turn = 0u64;
    let mut ws = None;
    while shared.more_turns(turn) {
        let socket = match ws.as_mut() {
            Some(s) => s,
            None => {
                let t0 = Instant::now();
                let bearer = (!l.bearer.is_empty()).then(|| l.bearer[id % l.bearer.len()].as_str());
                let source = l.sources.pick(id);
                match client::connect_ws(url, addr, source, bearer, 16 * 1024, l.turn_timeout).await
                {
                    Ok(s) => {
                        let mut st = shared.stats();
                        st.connections += 1;
                        st.connect
                            .saturating_record((t0.elapsed().as_micros() as u64).max(1));
                        drop(st);
                        ws.insert(s)
                    }
                    Err(_) => {
                        shared.stats().connection_failures += 1;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
        };
        let question = l.questions.pick(id, turn);
        let turn_id = format!("c{id}-t{turn}");
        let cancel = cancels(l.cancel_share, id, turn).then_some(l.cancel_after_tokens);
        let (end, state) =
            client::ws_turn(socket, &mut rec, question, &turn_id, cancel, l.turn_timeout).await;
        record(shared, &rec, &end);
        if state == SocketState::Gone {
            ws = None;
        }
        turn += 1;
        if !l.think.is_zero() {
            tokio::time::sleep(l.think).await;
        }
    }
    if let Some(mut s) = ws {
        let _ = s.close(None).await;
    }
}

async fn direct_client(shared: &Shared, id: usize, base: &str) {
    let l = &shared.load;
    let Some(http) = shared.http.as_ref() else {
        shared.stats().connection_failures += 1;
        return;
    };
    let url = format!("{}/chat/completions", base.trim_end_matches('/'));
    let mut rec = TurnRecorder::default();
    let mut turn = 0u64;
    while shared.more_turns(turn) {
        let question = l.questions.pick(id, turn);
        let body = client::direct_body(&l.model, question, l.max_tokens);
        let cancel = cancels(l.cancel_share, id, turn).then_some(l.cancel_after_tokens);
        let end = client::direct_turn(http, &url, body, &mut rec, cancel, l.turn_timeout).await;
        if end == TurnEnd::ConnectionLost {
            shared.stats().connection_failures += 1;
        }
        record(shared, &rec, &end);
        turn += 1;
        if !l.think.is_zero() {
            tokio::time::sleep(l.think).await;
        }
    }
}

/// An idle-socket load.
#[derive(Debug, Clone)]
pub struct Idle {
    pub label: String,
    pub url: String,
    pub addr: SocketAddr,
    pub sockets: usize,
    pub ramp: Duration,
    pub hold: Duration,
    pub sources: Sources,
    /// Handshakes in flight at once.
    pub concurrency: usize,
    pub server_pid: Option<u32>,
    pub connect_timeout: Duration,
    pub progress: bool,
}

/// Opens `sockets` WebSockets (each waits for `ready`), holds them for `hold`, reports.
pub async fn idle(load: Idle) -> Report {
    let start = Instant::now();
    let rss_before = rss_kib(load.server_pid);
    let held = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stats = Arc::new(Mutex::new(Stats::default()));
    let gate = Arc::new(tokio::sync::Semaphore::new(load.concurrency.max(1)));
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let mut set = JoinSet::new();
    for i in 0..load.sockets {
        let (held, failed, stats, gate) =
            (held.clone(), failed.clone(), stats.clone(), gate.clone());
        let mut release = release_rx.clone();
        let delay = load.ramp.mul_f64(i as f64 / load.sockets.max(1) as f64);
        let (url, addr, source, timeout) = (
            load.url.clone(),
            load.addr,
            load.sources.pick(i),
            load.connect_timeout,
        );
        set.spawn(async move {
            tokio::time::sleep_until((start + delay).into()).await;
            let permit = gate.acquire_owned().await;
            let t0 = Instant::now();
            // A small read buffer: these sockets only ever see pings.
            let ws = client::connect_ws(&url, addr, source, None, 4 * 1024, timeout).await;
            drop(permit);
            let mut ws = match ws {
                Ok(ws) => ws,
                Err(e) => {
                    let n = failed.fetch_add(1, Ordering::Relaxed);
                    if n < 5 {
                        eprintln!("connection {i} failed: {}", e.0);
                    }
                    return false;
                }
            };
            {
                let mut s = stats.lock().unwrap_or_else(PoisonError::into_inner);
                s.connections += 1;
                s.connect
                    .saturating_record((t0.elapsed().as_micros() as u64).max(1));
            }
            held.fetch_add(1, Ordering::Relaxed);
            // Read (so pings are answered) until released or the server closes.
            let open = loop {
                tokio::select! {
                    _ = release.changed() => break true,
                    msg = ws.next() => match msg {
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break false,
                    },
                }
            };
            held.fetch_sub(1, Ordering::Relaxed);
            if open {
                // Hold the count until every task has seen the release.
                drop(ws);
            }
            open
        });
    }
    // Wait until every socket has connected or failed.
    let mut last = Instant::now();
    loop {
        let (h, f) = (held.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
        if (h + f) as usize >= load.sockets {
            break;
        }
        if load.progress && last.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "[{:>6.1}s] {h} sockets held, {f} failed",
                start.elapsed().as_secs_f64()
            );
            last = Instant::now();
        }
        if start.elapsed() > load.ramp + load.connect_timeout * 4 + Duration::from_secs(60) {
            eprintln!("giving up waiting for the remaining connections");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_held = held.load(Ordering::Relaxed);
    let connected_at = Instant::now();
    // Let the server settle (allocations from the handshakes) before sampling its memory.
    tokio::time::sleep(Duration::from_secs(2).min(load.hold)).await;
    let rss_held = rss_kib(load.server_pid);
    let loadgen_rss = rss_kib(None);
    if load.progress {
        eprintln!(
            "[{:>6.1}s] {all_held} sockets held; holding for {:?}",
            start.elapsed().as_secs_f64(),
            load.hold
        );
    }
    tokio::time::sleep_until((connected_at + load.hold).into()).await;
    let held_at_end = held.load(Ordering::Relaxed);
    let _ = release_tx.send(true);
    while set.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    let mut stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
    stats.connection_failures = failed.load(Ordering::Relaxed);
    let mut report = Report::new(
        &load.label,
        "idle",
        &load.url,
        load.sockets,
        elapsed,
        &stats,
    );
    let per_socket = match (rss_before, rss_held) {
        (Some(b), Some(a)) if all_held > 0 => {
            Some((a.saturating_sub(b) as f64 * 1024.0 / all_held as f64).round())
        }
        _ => None,
    };
    report.idle = Some(IdleReport {
        requested: load.sockets,
        held: all_held,
        held_at_end,
        server_pid: load.server_pid,
        server_rss_before_kib: rss_before,
        server_rss_held_kib: rss_held,
        server_bytes_per_socket: per_socket,
        loadgen_rss_kib: loadgen_rss,
    });
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_share_is_honoured_across_clients_and_turns() {
        let n = (0..200)
            .flat_map(|c| (0..50).map(move |t| (c, t)))
            .filter(|(c, t)| cancels(0.1, *c, *t))
            .count();
        assert!((900..1100).contains(&n), "{n}");
        assert!(!cancels(0.0, 1, 1));
        assert!(cancels(1.0, 1, 1));
    }
}
