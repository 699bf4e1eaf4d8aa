//! Many sockets from one machine: a raised open-file limit, and connections spread over several
//! loopback source addresses (127.0.0.1, 127.0.0.2, …) so tens of thousands of them do not run
//! out of ephemeral ports.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use tokio::net::{TcpSocket, TcpStream};

/// Ephemeral ports one source address can use towards one destination, with room to spare
/// (Linux's default range 32768–60999 has 28,232).
pub const PORTS_PER_SOURCE: usize = 20_000;

/// Raises this process's open-file limit to at least `want` (the hard limit too when allowed, as
/// root is); returns the soft limit in force afterwards.
pub fn raise_nofile(want: u64) -> u64 {
    let now = getrlimit(Resource::Nofile);
    let soft = now.current.unwrap_or(u64::MAX);
    if soft >= want {
        return soft;
    }
    let hard = now.maximum.unwrap_or(u64::MAX);
    let raised = Rlimit {
        current: Some(want),
        maximum: Some(hard.max(want)),
    };
    if setrlimit(Resource::Nofile, raised).is_ok() {
        return want;
    }
    // Not privileged: go as far as the hard limit allows.
    let capped = Rlimit {
        current: Some(hard.min(want)),
        maximum: now.maximum,
    };
    match setrlimit(Resource::Nofile, capped) {
        Ok(()) => hard.min(want),
        Err(_) => soft,
    }
}

/// Where connections come from.
#[derive(Debug, Clone)]
pub struct Sources(Vec<IpAddr>);

impl Sources {
    /// `count` loopback sources (127.0.`net`.1, 127.0.`net`.2, …) when `target` is an IPv4
    /// loopback address, else the kernel's choice. `count == 0` picks enough for `sockets`
    /// connections. Different `net`s never share an address: to a server they are different
    /// clients.
    pub fn for_target(target: SocketAddr, sockets: usize, count: usize, net: u8) -> Self {
        let loopback_v4 = matches!(target.ip(), IpAddr::V4(ip) if ip.is_loopback());
        if !loopback_v4 {
            return Self(Vec::new());
        }
        let count = if count == 0 {
            sockets.div_ceil(PORTS_PER_SOURCE).max(1)
        } else {
            count
        }
        .min(254);
        Self(
            (1..=count)
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, net, i as u8)))
                .collect(),
        )
    }

    /// The source address for connection `i`, round robin; `None` = let the kernel choose.
    pub fn pick(&self, i: usize) -> Option<IpAddr> {
        (!self.0.is_empty()).then(|| self.0[i % self.0.len()])
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Connects to `target` from `source` (any port), with Nagle off.
pub async fn connect(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The socket address a `ws://` or `http://` URL points at.
pub async fn resolve(url: &str) -> anyhow::Result<SocketAddr> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| anyhow::anyhow!("bad URL {url}: {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| anyhow::anyhow!("no host in {url}"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("wss" | "https") => 443,
        _ => 80,
    });
    tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{host} does not resolve"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_spread_over_enough_sources() {
        let target: SocketAddr = "127.0.0.1:8000"
            .parse()
            .unwrap_or(SocketAddr::from(([0; 4], 0)));
        let s = Sources::for_target(target, 50_000, 0, 0);
        assert_eq!(s.len(), 3);
        assert_eq!(s.pick(0), Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))));
        assert_eq!(s.pick(4), Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
        assert_eq!(Sources::for_target(target, 10, 0, 0).len(), 1);
        assert_eq!(Sources::for_target(target, 10, 5, 0).len(), 5);
        let other = Sources::for_target(target, 10, 1, 1);
        assert_eq!(other.pick(0), Some(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1))));
    }

    #[test]
    fn remote_targets_leave_the_source_to_the_kernel() {
        let target: SocketAddr = "10.1.2.3:80"
            .parse()
            .unwrap_or(SocketAddr::from(([0; 4], 0)));
        assert_eq!(Sources::for_target(target, 50_000, 0, 0).pick(0), None);
    }

    #[tokio::test]
    async fn urls_resolve_with_default_ports() {
        let a = resolve("ws://127.0.0.1:8123/ws").await.ok();
        assert_eq!(a, Some(SocketAddr::from(([127, 0, 0, 1], 8123))));
        let b = resolve("http://127.0.0.1/v1").await.ok();
        assert_eq!(b, Some(SocketAddr::from(([127, 0, 0, 1], 80))));
    }
}
