//! Who is on the other end of a request: the client's address (the peer's, or behind trusted
//! proxies the one they forwarded), and whether a browser page may open a socket here (its
//! Origin, and the Host it reached us by: DNS rebinding).

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, header};

use crate::config::{Config, TrustedProxies};

/// The client's address. `X-Forwarded-For` is read only when the peer is a trusted proxy: the
/// entries the trusted proxies appended are skipped from the right, and the next one is the
/// client. Entries may carry a port (App Service adds one).
pub fn address(peer: SocketAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    let entries = || {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(parse_entry)
            .collect::<Vec<_>>()
    };
    match trusted {
        TrustedProxies::None => peer_ip,
        TrustedProxies::Hops(hops) => {
            let entries = entries();
            // The last `hops` addresses in the chain (the peer and what the proxies behind it
            // appended) are proxies; the one before them is the client.
            match entries.len().checked_sub(*hops) {
                Some(i) => entries[i].unwrap_or(peer_ip),
                None => entries.first().copied().flatten().unwrap_or(peer_ip),
            }
        }
        TrustedProxies::Networks(nets) => {
            let trusted = |ip: IpAddr| nets.iter().any(|n| n.contains(&ip));
            if !trusted(peer_ip) {
                return peer_ip;
            }
            let mut client = peer_ip;
            for entry in entries().into_iter().rev() {
                match entry {
                    Some(ip) => {
                        client = ip;
                        if !trusted(ip) {
                            break;
                        }
                    }
                    None => break,
                }
            }
            client
        }
    }
}

/// One X-Forwarded-For entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:5678`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    entry
        .parse::<SocketAddr>()
        .ok()
        .map(|s| s.ip().to_canonical())
}

/// Whether a browser may open a socket: no `Origin` (not a browser), an allowed origin, or the
/// page's own origin reached by one of the public host names. Returns the refused origin (or
/// host) otherwise. `Origin == Host` alone is not proof: a page whose name was rebound to this
/// address sends both with the attacker's name.
pub fn check_origin(headers: &HeaderMap, config: &Config) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin
        .to_str()
        .map_err(|_| "<non-ASCII origin>".to_owned())?;
    let allowed = &config.server.allowed_origins;
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return Ok(());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    if origin_host.is_none_or(|o| !o.eq_ignore_ascii_case(host)) {
        return Err(origin.to_owned());
    }
    let name = host_name(host);
    if config
        .auth
        .public_hosts
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
    {
        Ok(())
    } else {
        Err(format!(
            "{origin} (host {name} is not in RAGCHAT_PUBLIC_HOSTS)"
        ))
    }
}

/// `host[:port]` without the port (`[v6]` keeps its brackets).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// A client-sent value as it may appear in a log line: at most 100 characters, control
/// characters replaced.
pub fn shown(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(100)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if value.chars().nth(100).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(flags: &[&str]) -> Config {
        #[derive(Parser)]
        struct Args {
            #[command(flatten)]
            config: crate::config::ConfigArgs,
        }
        let mut argv = vec![
            "ragchat",
            "--embedder",
            "openai",
            "--embed-url",
            "http://e/v1",
        ];
        argv.extend_from_slice(flags);
        Args::try_parse_from(argv)
            .expect("parses")
            .config
            .validate()
            .expect("valid")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn origin_policy() {
        let local = config(&[]);
        let check = |c: &Config, origin: Option<&str>, host: &str| {
            let mut pairs = vec![("host", host)];
            pairs.extend(origin.map(|o| ("origin", o)));
            check_origin(&headers(&pairs), c)
        };
        assert!(
            check(&local, None, "anything:8000").is_ok(),
            "not a browser"
        );
        assert!(check(&local, Some("http://localhost:8000"), "localhost:8000").is_ok());
        assert!(check(&local, Some("http://127.0.0.1:8000"), "127.0.0.1:8000").is_ok());
        assert!(check(&local, Some("https://evil.example"), "localhost:8000").is_err());
        assert!(check(&local, Some("http://localhost:9999"), "localhost:8000").is_err());
        // DNS rebinding: the attacker's name for our address, in both headers.
        assert!(
            check(
                &local,
                Some("http://evil.example:8000"),
                "evil.example:8000"
            )
            .is_err()
        );
        let public = config(&["--public-hosts", "chat.example.com"]);
        assert!(
            check(
                &public,
                Some("https://chat.example.com"),
                "chat.example.com"
            )
            .is_ok()
        );
        assert!(check(&public, Some("http://localhost:8000"), "localhost:8000").is_err());
        let allowed = config(&["--allowed-origins", "https://chat.example.com"]);
        assert!(check(&allowed, Some("https://chat.example.com"), "api:8000").is_ok());
        assert!(check(&allowed, Some("https://other.example"), "api:8000").is_err());
        let any = config(&["--allowed-origins", "*"]);
        assert!(check(&any, Some("https://other.example"), "api:8000").is_ok());
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let peer: SocketAddr = "10.0.0.5:40000".parse().expect("addr");
        let h = headers(&[("x-forwarded-for", "198.51.100.7, 203.0.113.9:51234")]);
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(address(peer, &h, &TrustedProxies::None), ip("10.0.0.5"));
        // One proxy (App Service, Caddy): it appended the address it saw.
        assert_eq!(
            address(peer, &h, &TrustedProxies::Hops(1)),
            ip("203.0.113.9")
        );
        assert_eq!(
            address(peer, &h, &TrustedProxies::Hops(2)),
            ip("198.51.100.7")
        );
        let nets = TrustedProxies::Networks(vec!["10.0.0.0/8".parse().expect("net")]);
        assert_eq!(address(peer, &h, &nets), ip("203.0.113.9"));
        let outsider: SocketAddr = "192.0.2.1:1".parse().expect("addr");
        assert_eq!(
            address(outsider, &h, &nets),
            ip("192.0.2.1"),
            "not a trusted peer"
        );
        let none = HeaderMap::new();
        assert_eq!(
            address(peer, &none, &TrustedProxies::Hops(1)),
            ip("10.0.0.5")
        );
        let v6 = headers(&[("x-forwarded-for", "[2001:db8::1]:443")]);
        assert_eq!(
            address(peer, &v6, &TrustedProxies::Hops(1)),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn logged_values_are_short_and_printable() {
        let long = "x".repeat(300_000);
        assert_eq!(shown(&long).chars().count(), 101);
        assert_eq!(shown("a\nb\u{7}"), "a?b?");
    }
}
