//! The egress steps of an HTTP request on a listener with an `egress`
//! section: absolute-form targets (routed by their authority, which becomes
//! the Host), CONNECT (the allow-list, then a byte tunnel), what a request
//! no route takes gets (passthrough or 403), and deny routes' 403.

use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::body::ProxyBody;
use super::local_reply;
use super::proxy::TUNNEL_IDLE;
use super::server::ConnInfo;
use crate::cluster::{Cluster, Endpoint};
use crate::config::EgressPolicy;
use crate::egress::{self, Egress};
use crate::io::join_streams;
use crate::route::Route;
use crate::snapshot::Listener;
use crate::stats::EgressResult;
use crate::telemetry::exchange::Exchange;

/// A 403 for a call egress control refuses, counted and logged.
pub fn denied(listener: &Listener, what: &str) -> Response<ProxyBody> {
    egress::count(listener, EgressResult::Denied, what);
    let msg = format!("meshctl: egress denied: {what}\n");
    local_reply(StatusCode::FORBIDDEN, "egress_denied", msg)
}

/// The request's destination as host:port: its authority (absolute form,
/// HTTP/2) or Host, with the scheme's default port (80 unless https).
pub fn destination(req: &Request<Incoming>) -> Option<String> {
    let raw = super::headers::request_authority(req.uri(), req.headers());
    let authority: http::uri::Authority = raw.parse().ok()?;
    let port = authority
        .port_u16()
        .unwrap_or(match req.uri().scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
    Some(format!("{}:{port}", authority.host()))
}

/// Before routing, on listeners with egress: an absolute-form HTTP/1.x
/// target's authority replaces the Host header (RFC 9112 §3.2.2), and a
/// CONNECT is answered here (Some: the reply, a tunnel set up behind a 200).
pub async fn before_routing(
    listener: &Listener,
    conn: &ConnInfo,
    req: &mut Request<Incoming>,
    record: &mut Option<Box<Exchange>>,
) -> Option<Response<ProxyBody>> {
    let egress = listener.egress.as_ref()?;
    if req.method() == Method::CONNECT {
        return Some(connect(listener, egress, conn, req, record).await);
    }
    if req.version() < Version::HTTP_2 && req.uri().scheme().is_some() {
        let host = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        if let Some(host) = host {
            req.headers_mut().insert(header::HOST, host);
        }
    }
    None
}

/// What a request that no route took gets: the passthrough route under
/// `allow_any`, a 403 under `registry_only`, a 404 without egress.
// The Err variant is the reply itself, returned at once: boxing it buys nothing.
#[allow(clippy::result_large_err)]
pub fn unrouted<'l>(
    listener: &'l Listener,
    req: &Request<Incoming>,
    host: &str,
) -> Result<&'l Route<Arc<Cluster>>, Response<ProxyBody>> {
    let what = format!("{} {host}{}", req.method(), req.uri().path());
    match &listener.egress {
        Some(e) if e.policy == EgressPolicy::AllowAny => {
            egress::count(listener, EgressResult::Passthrough, &what);
            Ok(&e.route)
        }
        Some(_) => Err(denied(listener, &what)),
        None => {
            listener.stats.no_route.inc();
            let msg = format!(
                "meshctl: no route on listener '{}' for {what}\n",
                listener.name
            );
            Err(local_reply(StatusCode::NOT_FOUND, "no_route", msg))
        }
    }
}

/// A CONNECT host:port: allowed by a `connect` rule (to its cluster, or to
/// host:port) or by `allow_any` (to host:port); refused with a 403 else.
/// The upstream connection is made first, so that a failure is a 502; then
/// a 200, and the two connections are joined byte for byte.
async fn connect(
    listener: &Listener,
    egress: &Egress,
    conn: &ConnInfo,
    req: &mut Request<Incoming>,
    record: &mut Option<Box<Exchange>>,
) -> Response<ProxyBody> {
    let target = req
        .uri()
        .authority()
        .and_then(|a| Some((a.host().to_ascii_lowercase(), a.port_u16()?)));
    let Some((host, port)) = target else {
        let msg = "meshctl: CONNECT needs a host:port target\n".to_string();
        return closing(local_reply(StatusCode::BAD_REQUEST, "bad_request", msg));
    };
    let address = format!("{host}:{port}");
    if let Some(x) = record.as_mut() {
        x.upstream = Some(address.clone());
    }
    let rule = egress.connect_target(&host, port);
    let refused = rule.map_or(egress.policy == EgressPolicy::RegistryOnly, |r| r.deny);
    if refused {
        return closing(denied(listener, &format!("CONNECT {address}")));
    }
    let passthrough = egress.route.backends.first();
    let Some(cluster) = rule.and_then(|r| r.cluster.as_ref()).or(passthrough) else {
        let msg = "meshctl: no cluster to tunnel to\n".to_string();
        return closing(local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_backend",
            msg,
        ));
    };
    let destination;
    let ep: Option<&Endpoint> = if cluster.spec.original_destination {
        destination = cluster.destination(&address);
        destination.as_deref()
    } else {
        cluster.pick(cluster.hash_key(None, conn.peer.ip()))
    };
    let Some(ep) = ep else {
        cluster.stats.no_healthy_endpoint.inc();
        let msg = format!("meshctl: no endpoint to tunnel to for {address}\n");
        return closing(local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_healthy_endpoint",
            msg,
        ));
    };
    let upstream = match ep.pool.connect_stream().await {
        Ok(s) => s,
        Err(e) => {
            cluster.report(ep, crate::cluster::Outcome::ConnectFailure);
            let msg = format!("meshctl: cannot reach {address}: {e}\n");
            return closing(local_reply(StatusCode::BAD_GATEWAY, "connect_failure", msg));
        }
    };
    egress::count(
        listener,
        EgressResult::Tunnelled,
        &format!("CONNECT {address}"),
    );
    let down = hyper::upgrade::on(&mut *req);
    let stats = (listener.stats.clone(), cluster.stats.clone());
    let abort = conn.drain.abort.clone();
    conn.drain.tracker.spawn(async move {
        let _active = crate::stats::Active::enter(&stats.1, |s| &s.active_connections);
        stats.1.connections.inc();
        match down.await {
            Ok(down) => {
                let joined = join_streams(
                    TokioIo::new(down),
                    upstream,
                    (&stats.0, &stats.1),
                    None,
                    TUNNEL_IDLE,
                    &abort,
                );
                if let Err(e) = joined.await {
                    tracing::debug!("CONNECT tunnel ended: {e}");
                }
            }
            Err(e) => tracing::debug!("CONNECT upgrade failed: {e}"),
        }
    });
    Response::new(ProxyBody::empty())
}

/// A refused CONNECT closes its connection: the guard let what follows the
/// CONNECT through unchecked (as a tunnel), so no further request may be
/// read from it.
fn closing(mut resp: Response<ProxyBody>) -> Response<ProxyBody> {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::egress::{Egress, PASSTHROUGH};
    use crate::stats::Registry;
    use crate::tls::IdentityCell;

    #[test]
    fn connect_rules_match_host_patterns_and_ports() {
        let config = Config::parse(
            "listeners: [{name: p, address: 127.0.0.1:1, routes: [], egress: {policy: registry_only, \
             connect: [{host: api.example.com, port: 443}, {host: '*.pay.example', port: 8443, cluster: a}]}}]\n\
             clusters: [{name: a, endpoints: [{address: '127.0.0.1:9'}]}]\n",
        )
        .unwrap();
        let registry = Registry::default();
        let identity = IdentityCell::default();
        let passthrough = crate::egress::passthrough(None, &registry, &identity, 1);
        let a = crate::cluster::Cluster::build(&config.clusters[0], &registry, &identity, 1);
        let egress = Egress::new(
            config.listeners[0].egress.as_ref().unwrap(),
            &passthrough,
            |n| (n == "a").then(|| a.clone()),
        );
        assert!(egress.connect_target("api.example.com", 443).is_some());
        assert!(
            egress.connect_target("api.example.com", 80).is_none(),
            "port must be equal"
        );
        assert!(
            egress.connect_target("x.api.example.com", 443).is_none(),
            "exact only"
        );
        let wild = egress
            .connect_target("eu.pay.example", 8443)
            .expect("suffix");
        assert_eq!(wild.cluster.as_ref().map(|c| c.name.as_str()), Some("a"));
        assert!(egress.connect_target("pay.example", 8443).is_none());
        assert_eq!(egress.route.backends[0].name, PASSTHROUGH);
        assert!(egress.route.backends[0].spec.original_destination);
    }
}
