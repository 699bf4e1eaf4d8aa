//! Per-turn measurements (time to first token, inter-token gaps, total time, answer size,
//! server timings, errors) in hdrhistograms, and the report: percentiles as a table and JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

/// How one turn ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnEnd {
    /// A `done` frame (or the direct stream's `[DONE]`).
    Done {
        finish_reason: String,
        /// Server-reported embedding and retrieval time (ragchat's `timings_ms`), ms.
        embed_ms: Option<f64>,
        retrieve_ms: Option<f64>,
        /// Server-reported time to first token, ms.
        server_ttft_ms: Option<f64>,
    },
    /// An `error` frame with this code (or an HTTP error status in direct mode).
    Error { code: String },
    /// The connection failed or closed mid-turn.
    ConnectionLost,
}

/// Timestamps of one turn, filled as its frames arrive. Reused across turns.
#[derive(Debug)]
pub struct TurnRecorder {
    sent: Instant,
    first: Option<Instant>,
    last: Option<Instant>,
    cancel_sent: Option<Instant>,
    gaps_us: Vec<u64>,
    bytes: u64,
    tokens: u64,
}

impl Default for TurnRecorder {
    fn default() -> Self {
        Self {
            sent: Instant::now(),
            first: None,
            last: None,
            cancel_sent: None,
            gaps_us: Vec::with_capacity(512),
            bytes: 0,
            tokens: 0,
        }
    }
}

impl TurnRecorder {
    /// The ask (or request) goes out now.
    pub fn start(&mut self, now: Instant) {
        self.sent = now;
        self.first = None;
        self.last = None;
        self.cancel_sent = None;
        self.gaps_us.clear();
        self.bytes = 0;
        self.tokens = 0;
    }

    /// A token of `bytes` bytes arrived now.
    pub fn token(&mut self, now: Instant, bytes: usize) {
        if let Some(last) = self.last {
            self.gaps_us.push(micros(now - last));
        } else {
            self.first = Some(now);
        }
        self.last = Some(now);
        self.bytes += bytes as u64;
        self.tokens += 1;
    }

    pub fn cancel(&mut self, now: Instant) {
        self.cancel_sent = Some(now);
    }

    /// When the ask went out.
    pub fn started(&self) -> Instant {
        self.sent
    }

    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    pub fn cancelled(&self) -> bool {
        self.cancel_sent.is_some()
    }
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn ms_to_us(ms: f64) -> u64 {
    if ms.is_finite() && ms > 0.0 {
        (ms * 1000.0) as u64
    } else {
        0
    }
}

/// One histogram per measure. Times in microseconds, sizes in bytes.
#[derive(Debug)]
pub struct Stats {
    pub ttft: Histogram<u64>,
    pub ttft_excl: Histogram<u64>,
    pub gap: Histogram<u64>,
    pub total: Histogram<u64>,
    pub answer_bytes: Histogram<u64>,
    pub embed: Histogram<u64>,
    pub retrieve: Histogram<u64>,
    pub server_ttft: Histogram<u64>,
    pub cancel_to_done: Histogram<u64>,
    pub connect: Histogram<u64>,
    pub turns: u64,
    pub tokens: u64,
    pub answer_bytes_total: u64,
    pub finish_reasons: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub connections: u64,
    pub connection_failures: u64,
    pub turns_lost: u64,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 1 hour at 3 significant figures.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            ttft: histogram(),
            ttft_excl: histogram(),
            gap: histogram(),
            total: histogram(),
            answer_bytes: histogram(),
            embed: histogram(),
            retrieve: histogram(),
            server_ttft: histogram(),
            cancel_to_done: histogram(),
            connect: histogram(),
            turns: 0,
            tokens: 0,
            answer_bytes_total: 0,
            finish_reasons: BTreeMap::new(),
            errors: BTreeMap::new(),
            connections: 0,
            connection_failures: 0,
            turns_lost: 0,
        }
    }
}

impl Stats {
    /// Records one finished turn.
    pub fn record(&mut self, rec: &TurnRecorder, end: &TurnEnd, now: Instant) {
        self.turns += 1;
        self.tokens += rec.tokens;
        self.answer_bytes_total += rec.bytes;
        let ttft = rec.first.map(|f| micros(f - rec.sent));
        if let Some(t) = ttft {
            self.ttft.saturating_record(t.max(1));
        }
        for g in &rec.gaps_us {
            self.gap.saturating_record((*g).max(1));
        }
        match end {
            TurnEnd::Done {
                finish_reason,
                embed_ms,
                retrieve_ms,
                server_ttft_ms,
            } => {
                *self
                    .finish_reasons
                    .entry(finish_reason.clone())
                    .or_default() += 1;
                if let Some(e) = embed_ms {
                    self.embed.saturating_record(ms_to_us(*e).max(1));
                }
                if let Some(r) = retrieve_ms {
                    self.retrieve.saturating_record(ms_to_us(*r).max(1));
                }
                if let Some(s) = server_ttft_ms {
                    self.server_ttft.saturating_record(ms_to_us(*s).max(1));
                }
                if let Some(t) = ttft {
                    let pre = ms_to_us(embed_ms.unwrap_or(0.0) + retrieve_ms.unwrap_or(0.0));
                    self.ttft_excl
                        .saturating_record(t.saturating_sub(pre).max(1));
                }
                if let Some(c) = rec.cancel_sent {
                    self.cancel_to_done
                        .saturating_record(micros(now - c).max(1));
                } else {
                    self.total.saturating_record(micros(now - rec.sent).max(1));
                    self.answer_bytes.saturating_record(rec.bytes.max(1));
                }
            }
            TurnEnd::Error { code } => {
                *self.errors.entry(code.clone()).or_default() += 1;
            }
            TurnEnd::ConnectionLost => self.turns_lost += 1,
        }
    }

    /// Merges another set (one per client task would cost too much memory; used for tests and
    /// for combining runs).
    pub fn merge(&mut self, other: &Stats) {
        for (a, b) in [
            (&mut self.ttft, &other.ttft),
            (&mut self.ttft_excl, &other.ttft_excl),
            (&mut self.gap, &other.gap),
            (&mut self.total, &other.total),
            (&mut self.answer_bytes, &other.answer_bytes),
            (&mut self.embed, &other.embed),
            (&mut self.retrieve, &other.retrieve),
            (&mut self.server_ttft, &other.server_ttft),
            (&mut self.cancel_to_done, &other.cancel_to_done),
            (&mut self.connect, &other.connect),
        ] {
            // Same bounds on both sides, so adding cannot fail.
            let _ = a.add(b);
        }
        self.turns += other.turns;
        self.tokens += other.tokens;
        self.answer_bytes_total += other.answer_bytes_total;
        for (k, v) in &other.finish_reasons {
            *self.finish_reasons.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.connections += other.connections;
        self.connection_failures += other.connection_failures;
        self.turns_lost += other.turns_lost;
    }
}

/// Percentiles of one measure.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// Percentiles of `h`, divided by `scale` (1000 turns µs into ms).
    pub fn of(h: &Histogram<u64>, scale: f64) -> Self {
        if h.is_empty() {
            return Self {
                count: 0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                max: 0.0,
                mean: 0.0,
            };
        }
        let q = |x: f64| round3(h.value_at_quantile(x) as f64 / scale);
        Self {
            count: h.len(),
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            max: round3(h.max() as f64 / scale),
            mean: round3(h.mean() / scale),
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// What a run reports: its settings, counters and every measure's percentiles.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub label: String,
    pub mode: String,
    pub target: String,
    pub clients: usize,
    pub elapsed_secs: f64,
    pub turns: u64,
    pub turns_per_sec: f64,
    pub tokens: u64,
    pub tokens_per_sec: f64,
    pub answer_bytes_total: u64,
    pub connections: u64,
    pub connection_failures: u64,
    pub turns_lost: u64,
    pub finish_reasons: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    /// Times in milliseconds, `answer_bytes` in bytes.
    pub metrics: BTreeMap<&'static str, Summary>,
    /// Idle mode: sockets that got to `ready` and were held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleReport>,
}

/// The idle mode's extra figures.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    pub requested: usize,
    pub held: u64,
    pub held_at_end: u64,
    pub server_pid: Option<u32>,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_held_kib: Option<u64>,
    pub server_bytes_per_socket: Option<f64>,
    pub loadgen_rss_kib: Option<u64>,
}

impl Report {
    pub fn new(
        label: &str,
        mode: &str,
        target: &str,
        clients: usize,
        elapsed_secs: f64,
        s: &Stats,
    ) -> Self {
        let per_sec = |n: u64| {
            if elapsed_secs > 0.0 {
                round3(n as f64 / elapsed_secs)
            } else {
                0.0
            }
        };
        let mut metrics = BTreeMap::new();
        for (name, h, scale) in [
            ("ttft_ms", &s.ttft, 1000.0),
            ("ttft_excl_embed_retrieve_ms", &s.ttft_excl, 1000.0),
            ("inter_token_ms", &s.gap, 1000.0),
            ("total_ms", &s.total, 1000.0),
            ("answer_bytes", &s.answer_bytes, 1.0),
            ("server_embed_ms", &s.embed, 1000.0),
            ("server_retrieve_ms", &s.retrieve, 1000.0),
            ("server_ttft_ms", &s.server_ttft, 1000.0),
            ("cancel_to_done_ms", &s.cancel_to_done, 1000.0),
            ("connect_ms", &s.connect, 1000.0),
        ] {
            if !h.is_empty() {
                metrics.insert(name, Summary::of(h, scale));
            }
        }
        Self {
            label: label.to_owned(),
            mode: mode.to_owned(),
            target: target.to_owned(),
            clients,
            elapsed_secs: round3(elapsed_secs),
            turns: s.turns,
            turns_per_sec: per_sec(s.turns),
            tokens: s.tokens,
            tokens_per_sec: per_sec(s.tokens),
            answer_bytes_total: s.answer_bytes_total,
            connections: s.connections,
            connection_failures: s.connection_failures,
            turns_lost: s.turns_lost,
            finish_reasons: s.finish_reasons.clone(),
            errors: s.errors.clone(),
            metrics,
            idle: None,
        }
    }

    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} [{}] {} — {} clients, {:.1} s: {} turns ({:.1}/s), {} tokens ({:.0}/s), {} connections, {} connection failures, {} turns lost",
            self.label,
            self.mode,
            self.target,
            self.clients,
            self.elapsed_secs,
            self.turns,
            self.turns_per_sec,
            self.tokens,
            self.tokens_per_sec,
            self.connections,
            self.connection_failures,
            self.turns_lost
        );
        if !self.finish_reasons.is_empty() {
            let _ = writeln!(out, "finish reasons: {}", kv(&self.finish_reasons));
        }
        if !self.errors.is_empty() {
            let _ = writeln!(out, "errors by code: {}", kv(&self.errors));
        }
        let _ = writeln!(
            out,
            "{:<30} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "measure", "count", "p50", "p90", "p99", "max", "mean"
        );
        for (name, s) in &self.metrics {
            let _ = writeln!(
                out,
                "{:<30} {:>9} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
                name, s.count, s.p50, s.p90, s.p99, s.max, s.mean
            );
        }
        if let Some(i) = &self.idle {
            let opt = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
            let _ = writeln!(
                out,
                "idle: {} requested, {} held ({} still open at the end); server RSS {} KiB -> {} KiB = {} bytes/socket; loadgen RSS {} KiB",
                i.requested,
                i.held,
                i.held_at_end,
                opt(i.server_rss_before_kib),
                opt(i.server_rss_held_kib),
                opt(i.server_bytes_per_socket.map(|b| b.round() as u64)),
                opt(i.loadgen_rss_kib)
            );
        }
        out
    }
}

fn kv(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut h = histogram();
        for ms in 1..=1000u64 {
            h.saturating_record(ms * 1000);
        }
        let s = Summary::of(&h, 1000.0);
        assert_eq!(s.count, 1000);
        // Three significant figures: within 0.1 %.
        assert!((s.p50 - 500.0).abs() <= 0.5, "{s:?}");
        assert!((s.p90 - 900.0).abs() <= 0.9, "{s:?}");
        assert!((s.p99 - 990.0).abs() <= 1.0, "{s:?}");
        assert!((s.max - 1000.0).abs() <= 1.0, "{s:?}");
        assert!((s.mean - 500.5).abs() <= 0.5, "{s:?}");
    }

    #[test]
    fn empty_histograms_are_left_out_of_the_report() {
        let r = Report::new("x", "ws", "ws://h/ws", 1, 1.0, &Stats::default());
        assert!(r.metrics.is_empty());
        let json = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(json["turns"], 0);
        assert!(json.get("idle").is_none());
    }

    #[test]
    fn a_turn_records_ttft_gaps_total_and_ttft_without_embedding_and_retrieval() {
        let t0 = Instant::now();
        let mut rec = TurnRecorder::default();
        rec.start(t0);
        rec.token(t0 + Duration::from_millis(30), 3);
        rec.token(t0 + Duration::from_millis(80), 4);
        rec.token(t0 + Duration::from_millis(130), 5);
        let mut s = Stats::default();
        let end = TurnEnd::Done {
            finish_reason: "stop".into(),
            embed_ms: Some(8.0),
            retrieve_ms: Some(2.0),
            server_ttft_ms: Some(29.0),
        };
        s.record(&rec, &end, t0 + Duration::from_millis(140));
        let r = Report::new("x", "ws", "t", 1, 2.0, &s);
        // Within hdrhistogram's 3 significant figures.
        let m = |k: &str, want: f64| {
            let got = r.metrics.get(k).map_or(f64::NAN, |s| s.p50);
            assert!((got - want).abs() <= want * 0.001, "{k}: {got} vs {want}");
        };
        m("ttft_ms", 30.0);
        m("ttft_excl_embed_retrieve_ms", 20.0);
        m("inter_token_ms", 50.0);
        m("total_ms", 140.0);
        m("answer_bytes", 12.0);
        assert_eq!(r.metrics["inter_token_ms"].count, 2);
        assert_eq!(r.tokens, 3);
        assert_eq!(r.turns_per_sec, 0.5);
        assert_eq!(r.finish_reasons.get("stop"), Some(&1));
        assert!(r.table().contains("inter_token_ms"));
    }

    #[test]
    fn cancelled_turns_measure_cancel_to_done_not_total() {
        let t0 = Instant::now();
        let mut rec = TurnRecorder::default();
        rec.start(t0);
        rec.token(t0 + Duration::from_millis(10), 1);
        rec.cancel(t0 + Duration::from_millis(20));
        let mut s = Stats::default();
        let end = TurnEnd::Done {
            finish_reason: "cancelled".into(),
            embed_ms: None,
            retrieve_ms: None,
            server_ttft_ms: None,
        };
        s.record(&rec, &end, t0 + Duration::from_millis(25));
        assert!(s.total.is_empty());
        let p50 = s.cancel_to_done.value_at_quantile(0.5);
        assert!((5000..=5005).contains(&p50), "{p50}");
    }

    #[test]
    fn errors_are_counted_by_code() {
        let mut s = Stats::default();
        let rec = TurnRecorder::default();
        let now = Instant::now();
        for code in ["busy", "busy", "llm_unavailable"] {
            s.record(&rec, &TurnEnd::Error { code: code.into() }, now);
        }
        s.record(&rec, &TurnEnd::ConnectionLost, now);
        let mut merged = Stats::default();
        merged.merge(&s);
        assert_eq!(merged.errors.get("busy"), Some(&2));
        assert_eq!(merged.errors.get("llm_unavailable"), Some(&1));
        assert_eq!(merged.turns_lost, 1);
    }
}
