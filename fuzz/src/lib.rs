//! What the fuzz targets share: strings drawn mostly from a small vocabulary
//! of the shapes meshctl cares about (so that generated routes and requests
//! meet often), and requests built from them.

use arbitrary::{Arbitrary, Result, Unstructured};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Uri};

/// Path pieces, hosts, header values and patterns that meet each other.
const VOCABULARY: &[&str] = &[
    "",
    "/",
    "api",
    "v1",
    "a",
    "A",
    "x",
    "*",
    "**",
    ".",
    "..",
    "%2F",
    "%2f",
    "%",
    "%4",
    "é",
    "é/",
    "a b",
    "?",
    "&",
    "=",
    "#",
    ";",
    ":",
    "@",
    "example.com",
    "Example.COM",
    "*.example.com",
    "api.example.com",
    "[::1]",
    "[::1]:8080",
    "host:80",
    "host:443",
    "host:x",
    "true",
    "v=1",
    "x-canary",
    "x-user",
    "host",
    "connection",
    "upgrade",
    "te",
    "trailers",
    "[a-z]+",
    "(",
    ".*",
    "beta-[0-9]+",
    "spiffe://td/ns/shop/sa/web",
    "spiffe://*/ns/*/sa/*",
    "https",
    "http",
];

/// A string from the vocabulary most of the time, else anything.
#[derive(Debug, Clone)]
pub struct Word(pub String);

impl<'a> Arbitrary<'a> for Word {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        if u.ratio(3, 4)? {
            Ok(Word(u.choose(VOCABULARY)?.to_string()))
        } else {
            Ok(Word(String::arbitrary(u)?))
        }
    }
}

/// `/` followed by the words joined with `/`.
#[derive(Debug, Clone, Arbitrary)]
pub struct PathWords(pub Vec<Word>);

impl PathWords {
    pub fn path(&self) -> String {
        let words: Vec<&str> = self.0.iter().map(|w| w.0.as_str()).collect();
        format!("/{}", words.join("/"))
    }
}

/// A method the proxy will see: the common ones, or any token.
#[derive(Debug, Clone)]
pub struct AnyMethod(pub Method);

impl<'a> Arbitrary<'a> for AnyMethod {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        const COMMON: &[Method] = &[Method::GET, Method::POST, Method::DELETE, Method::HEAD];
        if u.ratio(7, 8)? {
            return Ok(AnyMethod(u.choose(COMMON)?.clone()));
        }
        let name = String::arbitrary(u)?;
        Ok(AnyMethod(
            Method::from_bytes(name.as_bytes()).unwrap_or(Method::GET),
        ))
    }
}

/// The valid pairs, in order; invalid names and values are left out, as
/// hyper never hands them over.
pub fn header_map(pairs: &[(Word, Word)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.0.as_bytes()),
            HeaderValue::from_bytes(value.0.as_bytes()),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// A request head as hyper would parse it: origin-form (or absolute-form)
/// target, a Host header, any other headers.
#[derive(Debug, Clone, Arbitrary)]
pub struct RequestSpec {
    pub method: AnyMethod,
    /// With `scheme://authority` in front (absolute-form) when set.
    pub absolute: Option<(bool, Word)>,
    pub path: PathWords,
    pub query: Option<Vec<(Word, Word)>>,
    pub host: Option<Word>,
    pub headers: Vec<(Word, Word)>,
}

impl RequestSpec {
    /// None when the pieces make no valid URI (hyper would refuse it).
    pub fn parts(&self) -> Option<Parts> {
        let mut target = String::new();
        if let Some((https, authority)) = &self.absolute {
            let scheme = if *https { "https" } else { "http" };
            target = format!("{scheme}://{}", authority.0);
        }
        target.push_str(&self.path.path());
        if let Some(pairs) = &self.query {
            let pairs: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}={}", k.0, v.0))
                .collect();
            target.push('?');
            target.push_str(&pairs.join("&"));
        }
        let uri: Uri = target.parse().ok()?;
        let mut headers = header_map(&self.headers);
        if let Some(host) = &self.host {
            headers.insert(http::header::HOST, HeaderValue::from_str(&host.0).ok()?);
        }
        let mut req = Request::new(());
        *req.method_mut() = self.method.0.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        Some(req.into_parts().0)
    }
}
