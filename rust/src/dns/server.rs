//! The DNS answerer of the `dns` section: one UDP socket and one task.
//! Names of the config's `records` are answered at once (A: the records;
//! any other type: no data); other names are forwarded to every upstream
//! server with a fresh query id, and the first answer is relayed with the
//! client's id (SERVFAIL when none comes within 2 s). The records are read
//! from the active snapshot for each query, so an update that only changes
//! them keeps the socket. Malformed packets get no reply. No TCP.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::wire::{self, Query};
use crate::config::DnsConfig;
use crate::shared::Shared;
use crate::stats::Counter;

/// How long a forwarded query may wait for an upstream answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// Forwarded queries in flight at most; past it, SERVFAIL at once.
const MAX_FORWARDS: usize = 256;
/// Room for any UDP answer (EDNS lets upstreams send more than 512 bytes).
const BUFFER: usize = 4096;

/// The answerer's counters: every datagram is a query, and ends as one of
/// answered (locally), forwarded (an upstream's answer relayed) or failed
/// (malformed and dropped, or SERVFAIL).
#[derive(Debug, Default)]
pub struct ServerStats {
    pub queries: Counter,
    pub answered: Counter,
    pub forwarded: Counter,
    pub failed: Counter,
    /// Where the socket is bound (None: no `dns` section).
    pub address: Mutex<Option<SocketAddr>>,
}

impl ServerStats {
    pub fn to_json(&self) -> Value {
        json!({
            "address": self.address.lock().unwrap_or_else(|e| e.into_inner()).map(|a| a.to_string()),
            "queries": self.queries.get(),
            "answered": self.answered.get(),
            "forwarded": self.forwarded.get(),
            "failed": self.failed.get(),
        })
    }

    /// `meshctl_dns_queries_total` rows: (result, count).
    pub fn by_result(&self) -> [(&'static str, u64); 3] {
        [
            ("answered", self.answered.get()),
            ("forwarded", self.forwarded.get()),
            ("failed", self.failed.get()),
        ]
    }
}

/// A running answerer: its socket's addresses and the switch that stops it.
pub struct Answerer {
    configured: SocketAddr,
    local: SocketAddr,
    stop: CancellationToken,
}

/// The answerer's socket, bound before an update commits (like listeners);
/// needs a runtime context.
pub struct Bound {
    configured: SocketAddr,
    local: SocketAddr,
    socket: UdpSocket,
}

pub fn bind(configured: SocketAddr) -> io::Result<Bound> {
    let socket = std::net::UdpSocket::bind(configured)?;
    socket.set_nonblocking(true)?;
    let local = socket.local_addr()?;
    Ok(Bound {
        configured,
        local,
        socket: UdpSocket::from_std(socket)?,
    })
}

// === impl Answerer ===

impl Answerer {
    /// Serves the bound socket until stopped; needs a runtime context.
    pub fn start(bound: Bound, shared: Arc<Shared>) -> Answerer {
        let Bound {
            configured,
            local,
            socket,
        } = bound;
        let socket = Arc::new(socket);
        let stop = CancellationToken::new();
        *shared
            .registry
            .dns_server
            .address
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(local);
        tracing::info!("dns answerer serving on {local} (udp)");
        tokio::spawn(serve(socket, local, shared, stop.clone()));
        Answerer {
            configured,
            local,
            stop,
        }
    }

    /// Whether a config asking for `address` can keep this socket: the same
    /// address, or the one a `:0` got.
    pub fn serves(&self, address: SocketAddr) -> bool {
        self.configured == address || self.local == address
    }

    pub fn stop(self, shared: &Shared) {
        self.stop.cancel();
        let mut address = shared
            .registry
            .dns_server
            .address
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *address == Some(self.local) {
            *address = None;
        }
        tracing::info!("dns answerer on {} stopped", self.local);
    }
}

async fn serve(
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let forwards = Arc::new(Semaphore::new(MAX_FORWARDS));
    let mut buf = vec![0u8; BUFFER];
    loop {
        let (n, client) = tokio::select! {
            got = socket.recv_from(&mut buf) => match got {
                Ok(got) => got,
                // ICMP errors of earlier sends surface here: not fatal.
                Err(e) => {
                    tracing::debug!("dns: receive failed: {e}");
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let stats = &shared.registry.dns_server;
        stats.queries.inc();
        let Some(query) = wire::parse_query(&buf[..n]) else {
            stats.failed.inc();
            continue;
        };
        let snapshot = shared.snapshot.load();
        let Some(dns) = &snapshot.config.dns else {
            stats.failed.inc();
            continue;
        };
        if let Some(reply) = local_answer(dns, &query) {
            // Counted before the reply leaves: a client that has it sees it counted.
            stats.answered.inc();
            send(&socket, &reply, client).await;
            continue;
        }
        let servfail = wire::reply(&query, wire::RCODE_SERVFAIL, &[], 0);
        let Ok(permit) = forwards.clone().try_acquire_owned() else {
            stats.failed.inc();
            send(&socket, &servfail, client).await;
            continue;
        };
        let upstream: Vec<SocketAddr> = dns
            .upstream
            .iter()
            .copied()
            // Never to itself: a query would go round until it timed out.
            .filter(|u| *u != local)
            .collect();
        let (packet, id) = (buf[..n].to_vec(), query.id);
        let (socket, shared) = (socket.clone(), shared.clone());
        tokio::spawn(async move {
            let stats = &shared.registry.dns_server;
            match tokio::time::timeout(FORWARD_TIMEOUT, relay(&packet, &upstream)).await {
                Ok(Ok(mut answer)) => {
                    wire::set_id(&mut answer, id);
                    stats.forwarded.inc();
                    send(&socket, &answer, client).await;
                }
                failed => {
                    if let Ok(Err(e)) = failed {
                        tracing::debug!("dns: forwarding failed: {e}");
                    }
                    stats.failed.inc();
                    send(&socket, &servfail, client).await;
                }
            }
            drop(permit);
        });
    }
}

/// The reply for a name of `records`: its A records, or no data for any
/// other type; None for a name that is not ours.
fn local_answer(dns: &DnsConfig, query: &Query<'_>) -> Option<Vec<u8>> {
    let addrs = dns.records.get(&query.name)?;
    let addrs: &[Ipv4Addr] = if query.qtype == wire::TYPE_A && query.qclass == wire::CLASS_IN {
        addrs
    } else {
        &[]
    };
    Some(wire::reply(query, wire::RCODE_NOERROR, addrs, dns.ttl_s))
}

/// Sends `query` to every upstream under a fresh id and returns the first
/// answer to it (its id still the fresh one).
async fn relay(query: &[u8], upstream: &[SocketAddr]) -> io::Result<Vec<u8>> {
    let id = fastrand::u16(..);
    let mut query = query.to_vec();
    wire::set_id(&mut query, id);
    let query: Arc<[u8]> = query.into();
    let mut asks = JoinSet::new();
    for &server in upstream {
        let query = query.clone();
        asks.spawn(async move {
            let any: SocketAddr = match server {
                SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            // Connected: only the server's datagrams come back.
            let socket = UdpSocket::bind(any).await?;
            socket.connect(server).await?;
            socket.send(&query).await?;
            let mut buf = vec![0u8; BUFFER];
            loop {
                let n = socket.recv(&mut buf).await?;
                let answer = &buf[..n];
                if wire::is_response(answer) && wire::id(answer) == Some(id) {
                    return Ok::<_, io::Error>(answer.to_vec());
                }
            }
        });
    }
    let mut last = io::Error::other("no upstream server");
    while let Some(done) = asks.join_next().await {
        match done {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(e)) => last = e,
            Err(e) => last = io::Error::other(e),
        }
    }
    Err(last)
}

async fn send(socket: &UdpSocket, packet: &[u8], to: SocketAddr) {
    if let Err(e) = socket.send_to(packet, to).await {
        tracing::debug!("dns: reply to {to} failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::dns::wire::tests::query;

    fn config() -> DnsConfig {
        Config::parse("dns: {address: '127.0.0.1:0', records: {pricing: ['240.240.0.7']}, upstream: [], ttl_s: 9}\n")
            .unwrap()
            .dns
            .unwrap()
    }

    #[test]
    fn answers_known_names_only() {
        let dns = config();
        let p = query(1, "PRICING.", wire::TYPE_A);
        let r = local_answer(&dns, &wire::parse_query(&p).unwrap()).expect("ours");
        assert_eq!(&r[6..8], &[0, 1], "one answer");
        assert_eq!(&r[r.len() - 4..], &[240, 240, 0, 7]);
        let p = query(1, "pricing", wire::TYPE_AAAA);
        let r = local_answer(&dns, &wire::parse_query(&p).unwrap()).expect("ours");
        assert_eq!(
            (&r[6..8], r[3] & 0x0f),
            (&[0u8, 0][..], 0),
            "no data, NOERROR"
        );
        let p = query(1, "pricing.default", wire::TYPE_A);
        assert!(local_answer(&dns, &wire::parse_query(&p).unwrap()).is_none());
    }

    #[tokio::test]
    async fn relays_the_first_upstream_answer() {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server = upstream.local_addr().unwrap();
        let refused = UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, from) = upstream.recv_from(&mut buf).await.unwrap();
            let q = wire::parse_query(&buf[..n]).unwrap();
            let answer = wire::reply(&q, 0, &[Ipv4Addr::new(1, 2, 3, 4)], 60);
            upstream.send_to(&answer, from).await.unwrap();
        });
        // The closed port's refusal does not end the wait for the other.
        let answer = relay(&query(42, "example.com", wire::TYPE_A), &[refused, server])
            .await
            .unwrap();
        assert!(wire::is_response(&answer));
        assert_eq!(&answer[answer.len() - 4..], &[1, 2, 3, 4]);
        assert!(relay(&query(1, "x", 1), &[]).await.is_err());
    }
}
