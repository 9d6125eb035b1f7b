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
        _ => local_reply(
            StatusCode::NOT_FOUND,
            "admin",
            "try /ready, /stats or /config\n".into(),
        ),
    }
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
