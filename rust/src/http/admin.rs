//! The admin listener (loopback only): readiness, stats and the active config.

use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::body::ProxyBody;
use super::local_reply;
use crate::shared::Shared;

pub fn handle(shared: &Shared, req: Request<Incoming>) -> Response<ProxyBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return local_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "method",
            "admin endpoints are read-only\n".into(),
        );
    }
    match req.uri().path() {
        "/ready" if shared.is_ready() => text(StatusCode::OK, "ready\n".into()),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into()),
        "/stats" => json(&shared.stats()),
        "/config" => json(&shared.snapshot.load().config.effective()),
        "/metrics" => metrics(shared, &req),
        _ => local_reply(
            StatusCode::NOT_FOUND,
            "admin",
            "try /ready, /stats, /config or /metrics\n".into(),
        ),
    }
}

/// Prometheus text, or OpenMetrics when the scraper asks for it.
fn metrics(shared: &Shared, req: &Request<Incoming>) -> Response<ProxyBody> {
    let openmetrics = req.headers().get_all(header::ACCEPT).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.contains("application/openmetrics-text"))
    });
    let body = shared.metrics(openmetrics);
    let mut r = Response::new(ProxyBody::local(body));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::local(body));
    *r.status_mut() = status;
    r
}

fn json(v: &serde_json::Value) -> Response<ProxyBody> {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    let mut r = Response::new(ProxyBody::local(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}
