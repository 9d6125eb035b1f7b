//! What the fuzz targets in `fuzz/` call (feature `fuzzing` only): the
//! private parsers and matchers re-exported, and the few steps of the
//! forwarding path that live inside async handlers replayed as one pure
//! function. Nothing here decides anything the proxy does not.

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;

use crate::config::{Config, ListenerKind};
use crate::filter::{redirect_location, rewrite_path, with_query, RequestUrl};
use crate::route::{RequestView, Route};

pub use crate::bench::h1_client::{parse_head as h1_response_head, take_chunked as h1_chunked};
pub use crate::bench::h1_client::{Framing as H1Framing, H1Error};
pub use crate::config::{decode_authorization, Action, ListenerLimits};
pub use crate::dns::wire::{parse_query as dns_query, reply as dns_reply, Query as DnsQuery};
pub use crate::http::h1::codec::{
    parse_head as upstream_head, Chunked as UpstreamChunked, Decoded as UpstreamDecoded,
    Framing as UpstreamFraming,
};
pub use crate::http::headers::{
    add_forwarded, request_authority, request_host, set_client_identity, strip_hop_by_hop,
    take_h2c, wants_upgrade,
};
pub use crate::http::strict::{
    check as h1_request_head, reply as refusal_reply, ChunkScan, Framing as H1RequestFraming,
    Head as H1Head,
};
pub use crate::pki::identity::{certificates, certified_key, validity, Identity};
pub use crate::pki::SpiffeId;
pub use crate::policy::authz::{Authorization, Decision, Glob};

/// One HTTP listener's routes, compiled as the proxy compiles them; a
/// backend is named by its cluster.
pub struct Routes(Vec<Route<String>>);

/// What a listener's routes do with one request.
#[derive(Debug)]
pub struct Handled {
    /// The index of the route that matched (the first one that did).
    pub index: usize,
    /// A redirect route's `Location`, None when it cannot be a header value
    /// (the proxy answers 400 then).
    pub location: Option<String>,
    /// The request target sent upstream; None when the rewrite made an
    /// invalid one (400) or the route redirects.
    pub target: Option<PathAndQuery>,
    /// The request headers after the route's edits and host rewrite.
    pub headers: HeaderMap,
    /// The cluster picked by weight; None when every weight is zero.
    pub backend: Option<String>,
}

/// The routes of every HTTP listener in `config`, in order. A route that
/// does not compile is an error: the decoder should have refused it.
pub fn http_routes(config: &Config) -> Result<Vec<Routes>, regex::Error> {
    config
        .listeners
        .iter()
        .filter_map(|l| match &l.kind {
            ListenerKind::Http { routes } => Some(routes),
            _ => None,
        })
        .map(|routes| {
            let compiled = routes.iter().enumerate().map(|(i, r)| {
                let backends = r.backends.iter().map(|b| b.cluster.clone()).collect();
                let mirrors = r.mirrors.iter().map(|m| m.cluster.clone()).collect();
                Route::new(i, r, backends, mirrors)
            });
            Ok(Routes(compiled.collect::<Result<_, _>>()?))
        })
        .collect()
}

// === impl Routes ===

impl Routes {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Matches the request like `http::proxy::route`, then runs what the
    /// chosen route does to it: the redirect it answers, or the header
    /// edits, rewrite and backend pick of the request it forwards.
    pub fn handle(&self, req: &Parts) -> Option<Handled> {
        let host = request_host(&req.uri, &req.headers);
        let view = RequestView {
            method: &req.method,
            host: &host,
            path: req.uri.path(),
            query: req.uri.query(),
            headers: &req.headers,
        };
        let (index, route) = self
            .0
            .iter()
            .enumerate()
            .find(|(_, r)| r.matcher.matches(&view))?;
        let mut headers = req.headers.clone();
        let mut handled = Handled {
            index,
            location: None,
            target: None,
            headers: HeaderMap::new(),
            backend: None,
        };
        if let Some(redirect) = &route.redirect {
            let url = RequestUrl {
                scheme: req.uri.scheme_str().unwrap_or("http"),
                authority: request_authority(&req.uri, &req.headers),
                path: req.uri.path(),
                query: req.uri.query(),
            };
            let location = redirect_location(redirect, route.matched_prefix.as_deref(), &url);
            handled.location = HeaderValue::try_from(location.as_str())
                .is_ok()
                .then_some(location);
            route.response_headers.apply(&mut headers);
            handled.headers = headers;
            return Some(handled);
        }
        route.request_headers.apply(&mut headers);
        let rewrite = route.rewrite.as_ref();
        if let Some(host) = rewrite.and_then(|r| r.host.as_ref()) {
            headers.insert(header::HOST, host.clone());
        }
        handled.target = match rewrite.and_then(|r| r.path.as_ref()) {
            None => req.uri.path_and_query().cloned(),
            Some(modifier) => {
                let path = rewrite_path(req.uri.path(), route.matched_prefix.as_deref(), modifier);
                PathAndQuery::try_from(with_query(path, req.uri.query())).ok()
            }
        };
        handled.headers = headers;
        handled.backend = route.pick_backend().cloned();
        Some(handled)
    }
}
