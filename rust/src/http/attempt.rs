//! One try of a request on one endpoint, and how its failure is judged:
//! which failures a retry policy covers (connect failure, refused stream,
//! reset, per-try timeout, a retried status or gRPC status), and which
//! methods may go again after bytes could have reached the upstream.

use http::{header, Request, Response, StatusCode};
use std::time::Instant;

use super::body::{grpc_status, Inner, ProxyBody, Verdict};
use super::local_reply;
use super::pool::{SendError, Unsent};
use super::proxy::refusal_reply;
use crate::cluster::{Cluster, Endpoint, Outcome};
use crate::config::{LbPolicy, RetryOn, RetryPolicy, UpstreamProtocol};

/// True when the request is kept for replay: the policy may retry after
/// bytes could have reached the upstream, for this method.
pub(super) fn keeps_copy(policy: &RetryPolicy, idempotent: bool) -> bool {
    if idempotent {
        policy.needs_replay()
    } else {
        policy.retries_on(RetryOn::RefusedStream)
    }
}

pub(super) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// True when an upstream answer is one the policy retries: a listed or
/// 5xx/gateway status, or a listed gRPC status in a trailers-only answer
/// (how gRPC servers answer an error before any message).
pub(super) fn answer_retriable(policy: &RetryPolicy, resp: &Response<Inner>) -> bool {
    if policy.retries_status(resp.status().as_u16()) {
        return true;
    }
    !policy.grpc_codes.is_empty()
        && grpc_status(resp.headers()).is_some_and(|code| policy.grpc_codes.contains(&code))
}

/// Why a try failed before any answer, as retry policies name it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Cause {
    RefusedStream,
    Reset,
    /// The per-try timeout passed first.
    Timeout,
}

impl Cause {
    pub(super) fn allowed(self, policy: &RetryPolicy, idempotent: bool) -> bool {
        match self {
            // Nothing was processed: safe for any method.
            Cause::RefusedStream => policy.retries_on(RetryOn::RefusedStream),
            Cause::Reset => idempotent && policy.retries_on(RetryOn::Reset),
            Cause::Timeout => {
                idempotent
                    && [RetryOn::Reset, RetryOn::GatewayError, RetryOn::ServerError]
                        .into_iter()
                        .any(|c| policy.retries_on(c))
            }
        }
    }
}

/// A try that failed: the reply the client gets if it is the last, the
/// request when it never left (a connect failure), free to go elsewhere,
/// and what went wrong otherwise.
pub(super) struct Failed {
    pub(super) reply: Response<ProxyBody>,
    pub(super) unsent: Option<Unsent>,
    pub(super) cause: Option<Cause>,
}

impl From<Response<ProxyBody>> for Failed {
    fn from(reply: Response<ProxyBody>) -> Self {
        Failed {
            reply,
            unsent: None,
            cause: None,
        }
    }
}

pub(super) type Answer = Response<Inner>;

/// One try, within the policy's per-try timeout (up to the response head).
/// `verdict`: where the client's request body reports its faults, if checked.
pub(super) async fn attempt(
    cluster: &Cluster,
    ep: &Endpoint,
    request: Request<ProxyBody>,
    protocol: UpstreamProtocol,
    policy: &RetryPolicy,
    verdict: Option<&Verdict>,
) -> Result<Answer, Failed> {
    let sent = send(cluster, ep, request, protocol, verdict);
    let Some(limit) = policy.per_try_timeout else {
        return sent.await;
    };
    match tokio::time::timeout(limit, sent).await {
        Ok(done) => done,
        Err(_) => {
            cluster.stats.timeouts.inc();
            cluster.report(ep, Outcome::Reset);
            let msg = format!(
                "meshctl: cluster '{}' did not answer a try within {limit:?}\n",
                cluster.name
            );
            Err(Failed {
                reply: local_reply(StatusCode::GATEWAY_TIMEOUT, "timeout", msg),
                unsent: None,
                cause: Some(Cause::Timeout),
            })
        }
    }
}

/// Step 2: one try on one endpoint. Its outcome counts toward the
/// endpoint's outlier detection. Err is the reply the client gets: 502, or
/// 503 when a circuit breaker refused a new connection.
pub(super) async fn send(
    cluster: &Cluster,
    ep: &Endpoint,
    request: Request<ProxyBody>,
    protocol: UpstreamProtocol,
    verdict: Option<&Verdict>,
) -> Result<Answer, Failed> {
    let sent = Instant::now();
    let result = ep.pool.send(request, protocol).await;
    // The client's body broke (or was too long, or stalled): its fault, not
    // the endpoint's; answered 4xx, never retried.
    if let (Err(_), Some(fault)) = (&result, verdict.and_then(Verdict::fault)) {
        let text = format!("meshctl: {fault}\n");
        return Err(Failed {
            reply: refusal_reply(fault.refusal(), &text),
            unsent: None,
            cause: None,
        });
    }
    match result {
        Ok(answer) => {
            let took = sent.elapsed();
            cluster.stats.latency.record(took);
            if cluster.spec.lb == LbPolicy::PeakEwma {
                ep.rtt.observe(took);
            }
            let status = answer.status().as_u16();
            cluster.report(ep, Outcome::Answer(status));
            cluster.stats.responses.record(status);
            Ok(answer)
        }
        Err(SendError::Connect(e, unsent)) => Err(unreached(
            (cluster, ep),
            &e,
            unsent,
            (StatusCode::BAD_GATEWAY, "connect_failure"),
            "upstream connect failure",
        )),
        // As Envoy does: a name that does not resolve is unavailable, not a bad gateway.
        Err(SendError::Unresolved(e, unsent)) => Err(unreached(
            (cluster, ep),
            &e,
            unsent,
            (StatusCode::SERVICE_UNAVAILABLE, "dns_failure"),
            "endpoint host name did not resolve",
        )),
        Err(SendError::Overflow(limit)) => Err(overflow(cluster, limit).into()),
        Err(SendError::Upstream(e)) => {
            cluster.stats.upstream_errors.inc();
            cluster.report(ep, Outcome::Reset);
            tracing::debug!(cluster = %cluster.name, endpoint = %ep.address, "upstream error: {e:?}");
            let msg = format!("meshctl: upstream error in cluster '{}'\n", cluster.name);
            Err(Failed {
                reply: local_reply(StatusCode::BAD_GATEWAY, "upstream_error", msg),
                unsent: None,
                cause: Some(if refused_stream(&e) {
                    Cause::RefusedStream
                } else {
                    Cause::Reset
                }),
            })
        }
    }
}

/// A try that never reached the endpoint: counted as a connect failure, the
/// request handed back for another try.
fn unreached(
    (cluster, ep): (&Cluster, &Endpoint),
    error: &str,
    unsent: Option<Unsent>,
    (status, kind): (StatusCode, &'static str),
    what: &str,
) -> Failed {
    cluster.report(ep, Outcome::ConnectFailure);
    tracing::debug!(cluster = %cluster.name, endpoint = %ep.address, "{what}: {error}");
    let msg = format!("meshctl: {what} in cluster '{}'\n", cluster.name);
    Failed {
        reply: local_reply(status, kind, msg),
        unsent,
        cause: None,
    }
}

/// True when an HTTP/2 upstream refused the stream (REFUSED_STREAM): it
/// processed nothing of the request.
fn refused_stream(e: &super::body::BoxError) -> bool {
    super::cause::<h2::Error>(e.as_ref())
        .is_some_and(|h2| h2.reason() == Some(h2::Reason::REFUSED_STREAM))
}

/// A circuit breaker's refusal: at once, counted, naming the limit.
pub(super) fn overflow(cluster: &Cluster, limit: &str) -> Response<ProxyBody> {
    cluster.stats.overflow.inc();
    overflow_reply(cluster, limit)
}

/// The refusal's reply, for a refusal counted where it was decided.
pub(super) fn overflow_reply(cluster: &Cluster, limit: &str) -> Response<ProxyBody> {
    let msg = format!("meshctl: cluster '{}' is at its {limit}\n", cluster.name);
    local_reply(StatusCode::SERVICE_UNAVAILABLE, "overflow", msg)
}
