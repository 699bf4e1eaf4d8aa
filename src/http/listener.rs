//! The accept loop: HTTP/1.1 with a header-read timeout (slowloris), a cap on header size, caps
//! on connections still in their HTTP phase (in total and per peer), `TCP_NODELAY`, the peer
//! address for handlers (`ConnectInfo`), and graceful shutdown. `axum::serve` sets none of the
//! limits (hyper's own header timeout needs a timer it does not give).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::config::TrustedProxies;

/// Connections in their HTTP phase (before a WebSocket upgrade, or plain requests) at once.
pub const MAX_HTTP_CONNECTIONS: usize = 512;
/// The same from one peer that is not a trusted proxy.
pub const MAX_HTTP_CONNECTIONS_PER_PEER: usize = 32;
/// Largest request head (request line and headers), in bytes; more gets 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// How long shutdown waits for plain HTTP requests in flight.
const HTTP_DRAIN: Duration = Duration::from_secs(10);

/// How a listener treats its connections.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Time for a request's headers.
    pub header_timeout: Duration,
    /// Proxies in front (their connections are not capped per peer).
    pub trusted_proxies: TrustedProxies,
}

/// Connections in their HTTP phase, in total and per peer.
#[derive(Default)]
struct Open {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// Gives a connection's place back when it leaves its HTTP phase (an upgraded socket counts
/// against the socket limits instead).
struct Place {
    open: Arc<Mutex<Open>>,
    peer: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total -= 1;
        if let Some(n) = open.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.per_peer.remove(&self.peer);
            }
        }
    }
}

fn take_place(open: &Arc<Mutex<Open>>, peer: IpAddr, per_peer_cap: bool) -> Option<Place> {
    let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
    let from_peer = o.per_peer.get(&peer).copied().unwrap_or(0);
    if o.total >= MAX_HTTP_CONNECTIONS
        || (per_peer_cap && from_peer >= MAX_HTTP_CONNECTIONS_PER_PEER)
    {
        return None;
    }
    o.total += 1;
    *o.per_peer.entry(peer).or_insert(0) += 1;
    Some(Place {
        open: Arc::clone(open),
        peer,
    })
}

/// The router as a hyper service that knows the peer's address.
#[derive(Clone)]
struct WithPeer {
    router: Router,
    peer: SocketAddr,
}

impl hyper::service::Service<hyper::Request<Incoming>> for WithPeer {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = <Router as Service<hyper::Request<Incoming>>>::Future;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        self.router.clone().call(request)
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets plain requests in flight
/// finish (at most 10 s). Upgraded sockets are not waited for here: their sessions are.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    let builder = builder.http1_only();
    let graceful = GracefulShutdown::new();
    let connections = TaskTracker::new();
    let open = Arc::new(Mutex::new(Open::default()));
    let behind_proxy = settings.trusted_proxies != TrustedProxies::None;
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to be freed.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let per_peer_cap = !behind_proxy || !is_trusted(&settings.trusted_proxies, peer.ip());
        let Some(place) = take_place(&open, peer.ip().to_canonical(), per_peer_cap) else {
            tracing::debug!(%peer, "too many connections in their HTTP phase; closed at once");
            continue;
        };
        // One token is one small frame, sent as soon as it exists: Nagle's algorithm would hold
        // it back waiting for the client's ACK of the previous one.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let service = WithPeer {
            router: router.clone(),
            peer,
        };
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
            .into_owned();
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(place);
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(HTTP_DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still in flight after 10 s; dropped");
    }
}

fn is_trusted(trusted: &TrustedProxies, peer: IpAddr) -> bool {
    match trusted {
        TrustedProxies::None => false,
        // Behind a counted chain of proxies, the peer is the nearest one.
        TrustedProxies::Hops(_) => true,
        TrustedProxies::Networks(nets) => nets.iter().any(|n| n.contains(&peer.to_canonical())),
    }
}
