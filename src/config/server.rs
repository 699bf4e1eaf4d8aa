//! HTTP and WebSocket settings.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use super::{ConfigError, invalid};

/// HTTP and WebSocket settings.
#[derive(Debug, Clone, Args)]
pub struct ServerConfig {
    /// Address to listen on.
    #[arg(
        long,
        env = "RAGCHAT_ADDR",
        default_value = "127.0.0.1:8000",
        global = true
    )]
    pub addr: SocketAddr,

    /// Origins allowed to open /ws, comma-separated (e.g. "https://chat.example.com"); "*" allows
    /// any. Empty: only pages served by this host. Clients without an Origin header are allowed.
    #[arg(
        long,
        env = "RAGCHAT_ALLOWED_ORIGINS",
        value_delimiter = ',',
        global = true
    )]
    pub allowed_origins: Vec<String>,

    /// Largest WebSocket message accepted, in bytes; a bigger one closes the socket with 1009.
    /// An ask with a 4,000-character question and a trimmed history fits in the default.
    #[arg(long, env = "RAGCHAT_MAX_FRAME_BYTES", default_value_t = 64 * 1024, global = true)]
    pub max_frame_bytes: usize,

    /// Seconds of silence on a socket before the server sends a keep-alive ping.
    #[arg(
        long,
        env = "RAGCHAT_PING_INTERVAL_SECS",
        default_value_t = 30,
        global = true
    )]
    pub ping_interval_secs: u64,

    /// Seconds without a client text or binary frame before an idle socket is closed (pongs do not
    /// count; a running turn keeps it open).
    #[arg(
        long,
        env = "RAGCHAT_IDLE_TIMEOUT_SECS",
        default_value_t = 600,
        global = true
    )]
    pub idle_timeout_secs: u64,

    /// Seconds running turns get to finish on SIGTERM before they are cancelled.
    #[arg(
        long,
        env = "RAGCHAT_SHUTDOWN_GRACE_SECS",
        default_value_t = 20,
        global = true
    )]
    pub shutdown_grace_secs: u64,
}

impl ServerConfig {
    /// Keep-alive ping interval.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }

    /// How long a socket may go without a client frame while no turn runs.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// How long running turns get to finish at shutdown.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// Checks what clap cannot; normalises the allowed origins.
    pub(super) fn validate(&mut self) -> Result<(), ConfigError> {
        if self.max_frame_bytes < 1024 {
            return Err(invalid("RAGCHAT_MAX_FRAME_BYTES", "must be at least 1024"));
        }
        if self.ping_interval_secs == 0 {
            return Err(invalid("RAGCHAT_PING_INTERVAL_SECS", "must be at least 1"));
        }
        if self.idle_timeout_secs <= self.ping_interval_secs {
            return Err(invalid(
                "RAGCHAT_IDLE_TIMEOUT_SECS",
                "must be longer than RAGCHAT_PING_INTERVAL_SECS",
            ));
        }
        // "a, b/" and an empty value (as in .env.example) mean what they look like.
        self.allowed_origins = std::mem::take(&mut self.allowed_origins)
            .into_iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty())
            .collect();
        for origin in &self.allowed_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(invalid(
                    "RAGCHAT_ALLOWED_ORIGINS",
                    format!("{origin:?} is not an origin; use e.g. https://chat.example.com or *"),
                ));
            }
        }
        Ok(())
    }
}
