//! Active health checks: one task per endpoint of a cluster that has a
//! `health_check`, probing on its interval (plus jitter) over a fresh
//! connection (mTLS included for mesh clusters). `unhealthy_threshold`
//! failures in a row take the endpoint out of balancing, `healthy_threshold`
//! passes bring it back. The tasks hold the cluster weakly and stop when a
//! config change drops it.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::{header, Method, Request, Uri};
use http_body_util::Empty;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::Cluster;
use crate::config::{HealthCheckConfig, HealthProbe, UpstreamProtocol};

pub(super) fn start(cluster: &Arc<Cluster>) {
    if cluster.spec.health_check.is_none() {
        return;
    }
    // Snapshots are compiled inside the proxy's runtime; unit tests may not be.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    for i in 0..cluster.endpoints.len() {
        runtime.spawn(run(Arc::downgrade(cluster), i));
    }
}

async fn run(cluster: Weak<Cluster>, i: usize) {
    // A cluster's spec never changes (a new spec makes a new cluster).
    let Some(hc) = cluster.upgrade().and_then(|c| c.spec.health_check.clone()) else {
        return;
    };
    let mut streak: i64 = 0; // > 0: passes in a row; < 0: failures in a row
    loop {
        let jitter = hc.jitter.mul_f64(fastrand::f64());
        tokio::time::sleep(hc.interval + jitter).await;
        let Some(c) = cluster.upgrade() else { return };
        let passed = matches!(
            tokio::time::timeout(hc.timeout, check(&c, i, &hc)).await,
            Ok(Ok(true))
        );
        streak = match (passed, streak) {
            (true, s) if s > 0 => s + 1,
            (true, _) => 1,
            (false, s) if s < 0 => s - 1,
            (false, _) => -1,
        };
        let ep = &c.endpoints[i];
        if passed {
            ep.stats.health_checks_passed.inc();
        } else {
            ep.stats.health_checks_failed.inc();
        }
        let verdict = if streak >= hc.healthy_threshold as i64 {
            Some(false)
        } else if -streak >= hc.unhealthy_threshold as i64 {
            Some(true)
        } else {
            None
        };
        if let Some(failing) = verdict {
            if ep.health.set_probe_failing(failing) {
                c.recount();
                tracing::warn!(
                    cluster = %c.name,
                    endpoint = %ep.address,
                    "health check {}",
                    if failing { "failing: endpoint out" } else { "passing: endpoint back" }
                );
            }
        }
    }
}

/// One check; Ok(true) when it passes.
async fn check(c: &Cluster, i: usize, hc: &HealthCheckConfig) -> Result<bool, String> {
    let ep = &c.endpoints[i];
    let stream = ep.pool.connect_stream().await.map_err(|e| e.to_string())?;
    let HealthProbe::Http { path, .. } = &hc.probe else {
        return Ok(true); // tcp: the connection opened
    };
    let io = TokioIo::new(stream);
    let request = |version| {
        let mut b = Request::builder()
            .method(Method::GET)
            .version(version)
            .header(header::USER_AGENT, "meshctl-health-check");
        b = match version {
            http::Version::HTTP_2 => b.uri(
                Uri::builder()
                    .scheme("http")
                    .authority(ep.authority.clone())
                    .path_and_query(path.as_str())
                    .build()
                    .map_err(|e| e.to_string())?,
            ),
            _ => b
                .uri(path.as_str())
                .header(header::HOST, ep.authority.as_str()),
        };
        b.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())
    };
    let status = match c.spec.protocol {
        UpstreamProtocol::Http1 => {
            let (mut sender, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let req = request(http::Version::HTTP_11)?;
            sender
                .send_request(req)
                .await
                .map_err(|e| e.to_string())?
                .status()
        }
        UpstreamProtocol::Http2 => {
            let (mut sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let req = request(http::Version::HTTP_2)?;
            sender
                .send_request(req)
                .await
                .map_err(|e| e.to_string())?
                .status()
        }
    };
    Ok(hc.passes(status.as_u16()))
}
