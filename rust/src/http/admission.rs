//! What may answer a request before it is forwarded, besides routing and
//! authorization: a rate limit's refusal and an injected fault's abort.

use http::{header, HeaderValue, Response, StatusCode};

use super::body::ProxyBody;
use super::local_reply;
use super::server::ConnInfo;
use crate::config::AbortAnswer;
use crate::policy::ratelimit::RateLimiter;
use crate::snapshot::Listener;

/// A rate limit's refusal (429 with `retry-after` in whole seconds), or
/// None to go on. Callers are told apart by their mTLS identity.
pub(super) fn rate_limit(
    listener: &Listener,
    limiter: Option<&RateLimiter>,
    conn: &ConnInfo,
) -> Option<Response<ProxyBody>> {
    let wait = limiter?
        .admit(conn.peer_id.as_deref(), &listener.stats)
        .err()?;
    let mut resp = local_reply(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "meshctl: rate limit exceeded\n".into(),
    );
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    Some(resp)
}

/// An injected fault's answer: the status, or a trailers-only gRPC error.
pub(super) fn abort_reply(answer: AbortAnswer) -> Response<ProxyBody> {
    match answer {
        AbortAnswer::Grpc(code) => {
            let mut resp = Response::new(ProxyBody::empty());
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", HeaderValue::from(code));
            h.insert(
                "grpc-message",
                HeaderValue::from_static("fault injected by meshctl"),
            );
            h.insert("x-meshctl-error", HeaderValue::from_static("fault"));
            resp
        }
        AbortAnswer::Http(status) => local_reply(
            StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "fault",
            "meshctl: fault injected\n".into(),
        ),
        // Only TCP listeners reset; a route never decodes one.
        AbortAnswer::Reset => local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "fault",
            "meshctl: fault injected\n".into(),
        ),
    }
}
