//! How much each client may use, per replica: open sockets (in total, per client address, per
//! principal), turns per minute (per principal and per address, GCRA via `governor`),
//! completion tokens per UTC day, and turns streaming at once (a semaphore with a short,
//! bounded wait). Over a limit, a client hears it at once, with when to retry.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::Principal;
use crate::config::LimitsConfig;
use crate::error::{ApiError, ErrorCode};

/// Open files kept free for what is not a client socket: health probes, the index and record
/// files, connections to the backends.
pub const FD_HEADROOM: u64 = 256;

/// How often (in checks) idle rate-limiter entries are dropped, bounding their memory.
const PRUNE_EVERY: u64 = 4096;

/// The limits, and what each client uses now.
pub struct Limits {
    config: LimitsConfig,
    /// Most sockets: the configured cap, lowered to fit the open-file limit.
    max_sockets: usize,
    sockets: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    per_principal: Mutex<HashMap<Principal, usize>>,
    by_principal: Option<DefaultKeyedRateLimiter<Principal>>,
    by_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    checks: AtomicU64,
    /// Completion tokens used per principal (or address) on a UTC day.
    tokens: Mutex<HashMap<String, (u64, u64)>>,
    turns: Arc<Semaphore>,
}

/// A socket's place; given back when dropped.
pub struct SocketPlace {
    limits: Arc<Limits>,
    address: IpAddr,
    principal: Option<Principal>,
}

impl Drop for SocketPlace {
    fn drop(&mut self) {
        self.limits.sockets.fetch_sub(1, Ordering::Relaxed);
        release(&self.limits.per_address, &self.address);
        if let Some(p) = &self.principal {
            release(&self.limits.per_principal, p);
        }
    }
}

fn release<K: std::hash::Hash + Eq>(counts: &Mutex<HashMap<K, usize>>, key: &K) {
    let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// Takes one of `most` places for `key`; false when they are all taken.
fn claim<K: std::hash::Hash + Eq + Clone>(
    counts: &Mutex<HashMap<K, usize>>,
    key: &K,
    most: usize,
) -> bool {
    let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
    let n = counts.entry(key.clone()).or_insert(0);
    if *n >= most {
        return false;
    }
    *n += 1;
    true
}

/// Refusal of a socket at its upgrade: over the replica's cap (`busy`, 503) or the address's
/// (`rate_limited`, 429); retry after a few seconds.
fn socket_refusal(code: ErrorCode, message: &str) -> ApiError {
    ApiError {
        retry_after_ms: Some(5_000),
        ..ApiError::new(code, message)
    }
}

fn quota(per_minute: u32, burst: u32) -> Option<Quota> {
    let per_minute = NonZeroU32::new(per_minute)?;
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Some(Quota::per_minute(per_minute).allow_burst(burst))
}

/// Days since 1970-01-01, UTC.
fn utc_day() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

/// Milliseconds until the next UTC midnight.
fn ms_to_midnight() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    86_400_000 - now % 86_400_000
}

impl Limits {
    /// The limits `config` sets; `open_files` is the process's open-file limit, which caps the
    /// sockets (with [`FD_HEADROOM`] kept free).
    pub fn new(config: LimitsConfig, open_files: u64) -> Self {
        let fit = open_files.saturating_sub(FD_HEADROOM).max(1);
        let max_sockets = config
            .max_connections
            .min(usize::try_from(fit).unwrap_or(usize::MAX));
        if max_sockets < config.max_connections {
            tracing::warn!(
                configured = config.max_connections,
                open_files,
                max_sockets,
                "RAGCHAT_MAX_CONNECTIONS lowered to fit the open-file limit"
            );
        }
        let quota = quota(config.turns_per_minute, config.turn_burst);
        Self {
            max_sockets,
            sockets: AtomicUsize::new(0),
            per_address: Mutex::default(),
            per_principal: Mutex::default(),
            by_principal: quota.map(RateLimiter::keyed),
            by_address: quota.map(RateLimiter::keyed),
            checks: AtomicU64::new(0),
            tokens: Mutex::default(),
            turns: Arc::new(Semaphore::new(config.max_concurrent_turns)),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// Sockets open now.
    pub fn open_sockets(&self) -> usize {
        self.sockets.load(Ordering::Relaxed)
    }

    /// A place for a new socket from `address`, or why not.
    pub fn open_socket(self: &Arc<Self>, address: IpAddr) -> Result<SocketPlace, ApiError> {
        let taken = self.sockets.fetch_add(1, Ordering::Relaxed);
        if taken >= self.max_sockets {
            self.sockets.fetch_sub(1, Ordering::Relaxed);
            return Err(socket_refusal(
                ErrorCode::Busy,
                "this server holds as many sockets as it can; retry shortly",
            ));
        }
        if !claim(
            &self.per_address,
            &address,
            self.config.max_sockets_per_address,
        ) {
            self.sockets.fetch_sub(1, Ordering::Relaxed);
            return Err(socket_refusal(
                ErrorCode::RateLimited,
                "too many sockets from this address; close some and retry",
            ));
        }
        Ok(SocketPlace {
            limits: Arc::clone(self),
            address,
            principal: None,
        })
    }

    /// Counts `place` against its principal's sockets (not the anonymous one's: that would
    /// cap the whole service), or says it is one too many.
    pub fn claim_principal(&self, place: &mut SocketPlace, principal: &Principal) -> bool {
        if principal.is_anonymous() {
            return true;
        }
        if !claim(
            &self.per_principal,
            principal,
            self.config.max_sockets_per_principal,
        ) {
            return false;
        }
        place.principal = Some(principal.clone());
        true
    }

    /// Whether `principal` at `address` may start a turn now: the turn rates (per principal and
    /// per address) and the day's tokens. `rate_limited` with when to retry otherwise.
    pub fn check_turn(&self, principal: &Principal, address: IpAddr) -> Result<(), ApiError> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune();
        }
        let now = DefaultClock::default().now();
        let wait = |not_until: governor::NotUntil<_>| not_until.wait_time_from(now);
        let by_principal = match (&self.by_principal, principal.is_anonymous()) {
            (Some(limiter), false) => limiter.check_key(principal).err().map(wait),
            _ => None,
        };
        let by_address = self
            .by_address
            .as_ref()
            .and_then(|l| l.check_key(&address).err().map(wait));
        if let Some(wait) = by_principal.max(by_address) {
            return Err(rate_limited(
                "too many questions; wait a moment",
                wait + Duration::from_millis(1),
            ));
        }
        if self.config.daily_tokens > 0 {
            let used = self.used_today(&quota_key(principal, address));
            if used >= self.config.daily_tokens {
                return Err(rate_limited(
                    "today's token allowance is used up; it renews at midnight UTC",
                    Duration::from_millis(ms_to_midnight()),
                ));
            }
        }
        Ok(())
    }

    /// Adds a turn's completion tokens to the day's count of its principal (or address).
    pub fn charge(&self, principal: &Principal, address: IpAddr, tokens: u64) {
        if self.config.daily_tokens == 0 || tokens == 0 {
            return;
        }
        let today = utc_day();
        let mut used = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let entry = used
            .entry(quota_key(principal, address))
            .or_insert((today, 0));
        if entry.0 != today {
            *entry = (today, 0);
        }
        entry.1 = entry.1.saturating_add(tokens);
    }

    fn used_today(&self, key: &str) -> u64 {
        let used = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        match used.get(key) {
            Some((day, n)) if *day == utc_day() => *n,
            _ => 0,
        }
    }

    /// A place among the turns streaming at once, waiting at most `RAGCHAT_TURN_QUEUE_MS`;
    /// `busy` when none frees up in time.
    pub async fn turn_place(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        let wait = self.config.turn_queue;
        match tokio::time::timeout(wait, Arc::clone(&self.turns).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError {
                retry_after_ms: Some(1_000),
                ..ApiError::new(
                    ErrorCode::Busy,
                    "the service is answering as many questions as it can; retry shortly",
                )
            }),
        }
    }

    /// Turns streaming now.
    pub fn running_turns(&self) -> usize {
        self.config.max_concurrent_turns - self.turns.available_permits()
    }

    /// Drops what no longer limits anyone: idle rate-limiter keys, past days' token counts.
    fn prune(&self) {
        if let Some(l) = &self.by_principal {
            l.retain_recent();
        }
        if let Some(l) = &self.by_address {
            l.retain_recent();
        }
        let today = utc_day();
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (day, _)| *day == today);
    }
}

/// Whose tokens a turn spends: its principal, or its address when everyone is anonymous.
fn quota_key(principal: &Principal, address: IpAddr) -> String {
    if principal.is_anonymous() {
        format!("address:{address}")
    } else {
        principal.id().to_owned()
    }
}

fn rate_limited(message: &str, wait: Duration) -> ApiError {
    ApiError {
        retry_after_ms: Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1)),
        ..ApiError::new(ErrorCode::RateLimited, message)
    }
}

/// Refused connections and asks: counted by kind, and logged with the client's address at most
/// once per kind every 10 s (with how many were refused since), so a flood makes a few lines, not
/// millions.
pub struct Refusals {
    kinds: [RefusalKind; 6],
}

struct RefusalKind {
    count: AtomicU64,
    /// Refusals since the last log line, and when that was.
    since: Mutex<(u64, Option<std::time::Instant>)>,
}

/// How often each kind of refusal is logged.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

impl Refusals {
    /// A browser origin (or host) that may not open a socket.
    pub const ORIGIN: usize = 0;
    /// No valid credential.
    pub const AUTH: usize = 1;
    /// Over a socket limit.
    pub const SOCKETS: usize = 2;
    /// Over a turn rate or the day's tokens.
    pub const RATE: usize = 3;
    /// No place among the concurrent turns.
    pub const BUSY: usize = 4;
    /// A frame too large, begun and never finished, or not UTF-8.
    pub const FRAME: usize = 5;
    /// Their names, for logs and metrics.
    pub const NAMES: [&'static str; 6] = [
        "forbidden_origin",
        "unauthorized",
        "socket_limit",
        "rate_limited",
        "busy",
        "bad_frame",
    ];

    /// Counts one refusal of `kind` for `address`, logging it unless one was logged lately.
    pub fn note(&self, kind: usize, address: IpAddr, why: &str) {
        let Some(k) = self.kinds.get(kind) else {
            return;
        };
        k.count.fetch_add(1, Ordering::Relaxed);
        let mut since = k.since.lock().unwrap_or_else(|e| e.into_inner());
        since.0 += 1;
        if since.1.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_EVERY) {
            let why: String = why.chars().take(200).collect();
            tracing::warn!(
                refused = Self::NAMES[kind],
                client = %address,
                why,
                since_last_line = since.0,
                "refused"
            );
            *since = (0, Some(std::time::Instant::now()));
        }
    }

    /// Refusals of each kind since start.
    pub fn counts(&self) -> [(&'static str, u64); 6] {
        std::array::from_fn(|i| (Self::NAMES[i], self.kinds[i].count.load(Ordering::Relaxed)))
    }
}

impl Default for Refusals {
    fn default() -> Self {
        Self {
            kinds: std::array::from_fn(|_| RefusalKind {
                count: AtomicU64::new(0),
                since: Mutex::new((0, None)),
            }),
        }
    }
}
