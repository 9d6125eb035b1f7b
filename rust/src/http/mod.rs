//! HTTP: the server side of each listener, the forwarding path, header
//! hygiene, protocol upgrades and the admin endpoints.

pub mod admin;
mod admission;
mod attempt;
pub mod body;
mod egress;
mod guard;
pub(crate) mod h1;
pub mod headers;
pub mod mirror;
pub mod pool;
pub mod proxy;
pub mod replay;
pub mod server;
pub(crate) mod strict;

use http::{header, Response, StatusCode};

use body::ProxyBody;

/// The first error of type `T` in `e`'s chain of sources, `e` included.
pub(crate) fn cause<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        source = err.source();
    }
    None
}

/// A short plain-text reply made by the proxy itself.
pub fn local_reply(status: StatusCode, kind: &'static str, text: String) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::local(text));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert("x-meshctl-error", header::HeaderValue::from_static(kind));
    resp
}
