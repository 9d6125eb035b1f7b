//! Request mirroring: copies of a share of a route's requests go to other
//! clusters on the side. A copy leaves once the request body has been read
//! whole (bodies over the replay limit are not copied), with `-shadow` added
//! to its host, as Envoy does; its answer is read and dropped. Nothing here
//! can delay or fail the primary request: copies run in their own tasks,
//! within the mirror cluster's `max_requests` and a timeout.

use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{header, HeaderValue, Request};
use http_body_util::BodyExt;

use super::attempt::send;
use super::proxy::set_target;
use super::replay::Replay;
use crate::cluster::Cluster;
use crate::policy::fault::roll;
use crate::stats::Active;

/// How long a copy may take when its route has no timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The mirror clusters this request is copied to (each rolled on its own).
pub fn chosen(mirrors: &[(Arc<Cluster>, f64)]) -> Vec<Arc<Cluster>> {
    mirrors
        .iter()
        .filter(|(_, percent)| roll(*percent))
        .map(|(c, _)| c.clone())
        .collect()
}

pub fn send_copies(clusters: Vec<Arc<Cluster>>, replay: &Replay, limit: Duration) {
    for cluster in clusters {
        let replay = replay.share();
        tokio::spawn(async move {
            if tokio::time::timeout(limit, copy(&cluster, &replay, limit))
                .await
                .is_err()
            {
                cluster.stats.timeouts.inc();
            }
        });
    }
}

async fn copy(cluster: &Cluster, replay: &Replay, limit: Duration) {
    let skipped = || cluster.stats.mirror_skipped.inc();
    let Some(req) = replay.again_when_read(limit).await else {
        return skipped();
    };
    let max = cluster.spec.circuit_breakers.max_requests;
    let Some(_in_flight) = Active::try_enter(&cluster.stats, |s| &s.active_requests, max) else {
        cluster.stats.overflow.inc();
        return skipped();
    };
    let Some(ep) = cluster.pick(None) else {
        cluster.stats.no_healthy_endpoint.inc();
        return skipped();
    };
    let (mut parts, body) = req.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if let Some(a) = parts.uri.authority().cloned() {
        parts.headers.entry(header::HOST).or_insert_with(|| {
            HeaderValue::from_str(a.as_str()).unwrap_or(HeaderValue::from_static("localhost"))
        });
    }
    if let Some(shadow) = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| HeaderValue::try_from(shadow_host(h)).ok())
    {
        parts.headers.insert(header::HOST, shadow);
    }
    if set_target(&mut parts, pq, cluster.spec.protocol, &ep.authority).is_err() {
        return skipped();
    }
    cluster.stats.requests.inc();
    cluster.stats.mirrored.inc();
    ep.stats.requests.inc();
    let _ep_active = Active::enter(&ep.stats, |s| &s.active);
    let request = Request::from_parts(parts, body);
    // The one try function: the same counters and outlier accounting as the
    // primary's tries; a failure's reply is simply dropped.
    if let Ok(resp) = send(cluster, ep, request, cluster.spec.protocol, None).await {
        // Read to the end, so that the connection can serve again.
        let _ = resp.into_body().collect().await;
    }
}

/// `host-shadow`, keeping the port: the copy's host, so that the shadow
/// can tell copies from real traffic.
fn shadow_host(host: &str) -> String {
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{name}-shadow:{port}")
        }
        _ => format!("{host}-shadow"),
    }
}

#[cfg(test)]
mod tests {
    use super::shadow_host;

    #[test]
    fn shadow_hosts_keep_their_port() {
        assert_eq!(shadow_host("api:8080"), "api-shadow:8080");
        assert_eq!(shadow_host("api.example.com"), "api.example.com-shadow");
    }
}
