//! Properties of route matching (proptest): exact and prefix paths as
//! documented, header and query conditions against a plain model, and the
//! first matching route winning (explain included).

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::explain::{explain_routes, RequestDescription};

// === strategies ===

/// Path segments that collide often: a small alphabet, escapes, dots.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ab]{0,3}",
        Just("%2F".to_string()),
        Just(".".to_string()),
        Just("é".to_string()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 0..4).prop_map(|s| format!("/{}", s.join("/")))
}

/// A request path made from `base`: itself, with something after it, or unrelated.
fn near(base: String) -> impl Strategy<Value = String> {
    (0..3u8, path(), "[ab/]{0,3}").prop_map(move |(how, other, tail)| match how {
        0 => base.clone(),
        1 => format!("{base}{tail}"),
        _ => other,
    })
}

fn name() -> impl Strategy<Value = HeaderName> {
    prop::sample::select(vec!["x-a", "x-b", "x-c"]).prop_map(HeaderName::from_static)
}

fn value() -> impl Strategy<Value = String> {
    "[ab ]{0,2}"
}

/// Query parameter names and values, raw: they may need escaping.
fn param() -> impl Strategy<Value = String> {
    "[ab&=%+ ]{0,2}"
}

fn matcher(path: PathMatch) -> Matcher {
    let m = MatchConfig {
        path,
        ..MatchConfig::default()
    };
    Matcher::new(&m).expect("no regex")
}

/// Runs `f` on a GET to `path?query` with `headers`.
fn with_request<R>(
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    f: impl FnOnce(&RequestView<'_>) -> R,
) -> R {
    let view = RequestView {
        method: &Method::GET,
        host: "h",
        path,
        query,
        headers,
    };
    f(&view)
}

// === models ===

/// Percent-encodes everything but letters, so the model's own decoding is trivial.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The decoded `(name, value)` pairs of a query made by `encode`.
fn decoded_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let mut out = Vec::new();
        let mut b = s.bytes();
        while let Some(c) = b.next() {
            if c == b'%' {
                let hex: String = [b.next(), b.next()]
                    .iter()
                    .flatten()
                    .map(|&c| c as char)
                    .collect();
                out.push(u8::from_str_radix(&hex, 16).expect("encoded"));
            } else {
                out.push(c);
            }
        }
        String::from_utf8(out).expect("UTF-8")
    };
    query
        .split('&')
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(n), decode(v))
        })
        .collect()
}

proptest! {
    #[test]
    fn exact_path_matches_only_itself(p in path(), q in path()) {
        let m = matcher(PathMatch::Exact(p.clone()));
        let hm = HeaderMap::new();
        prop_assert!(with_request(&p, None, &hm, |r| m.matches(r)));
        prop_assert_eq!(with_request(&q, None, &hm, |r| m.matches(r)), p == q);
    }

    /// Segment-aware (PathMatch::Prefix): the prefix, without trailing
    /// slashes, is the whole path or is followed by `/`.
    #[test]
    fn prefix_respects_segments(
        (p, q) in path().prop_flat_map(|p| (Just(p.clone()), near(p)))
    ) {
        let m = matcher(PathMatch::Prefix(p.clone()));
        let base = p.trim_end_matches('/');
        let want = p == "/" || q == base || q.starts_with(&format!("{base}/"));
        let hm = HeaderMap::new();
        prop_assert_eq!(with_request(&q, None, &hm, |r| m.matches(r)), want);
    }

    /// A header condition holds when some value of that header is exactly the one wanted.
    #[test]
    fn headers_agree_with_model(
        wanted in prop::collection::vec((name(), value()), 0..3),
        sent in prop::collection::vec((name(), value()), 0..5),
    ) {
        let m = Matcher::new(&MatchConfig { headers: wanted.clone(), ..MatchConfig::default() })
            .expect("no regex");
        let mut hm = HeaderMap::new();
        for (n, v) in &sent {
            hm.append(n.clone(), HeaderValue::from_str(v).expect("visible ASCII"));
        }
        let model = wanted.iter().all(|w| sent.contains(w));
        prop_assert_eq!(with_request("/", None, &hm, |r| m.matches(r)), model);
    }

    /// A query condition holds when some decoded `name=value` pair is exactly it.
    #[test]
    fn query_agrees_with_model(
        wanted in prop::collection::vec((param(), param()), 0..3),
        sent in prop::collection::vec((param(), param()), 0..5),
        raw in any::<bool>(),
    ) {
        let query: Vec<String> = sent.iter().map(|(n, v)| format!("{}={}", encode(n), encode(v))).collect();
        let query = query.join("&");
        let m = Matcher::new(&MatchConfig { query: wanted.clone(), ..MatchConfig::default() })
            .expect("no regex");
        let hm = HeaderMap::new();
        // `raw`: an empty query string is sent as `?` rather than left out.
        let sent_query = (raw || !query.is_empty()).then_some(query.as_str());
        let pairs = sent_query.map(decoded_pairs).unwrap_or_default();
        let model = wanted.iter().all(|w| pairs.contains(w));
        let got = with_request("/", sent_query, &hm, |r| m.matches(r));
        prop_assert_eq!(got, model);
    }

    /// The first route whose match holds wins, whatever follows it; a route
    /// that does not match, put in front, changes nothing but the index; and
    /// explain names the same route.
    #[test]
    fn first_match_wins(
        prefixes in prop::collection::vec(prop::option::of(path()), 1..5),
        extra in path(),
        q in path(),
    ) {
        let matches: Vec<Value> = prefixes
            .iter()
            .map(|p| p.as_ref().map_or(Value::Null, |p| json!({"path_prefix": p})))
            .collect();
        let matchers: Vec<Matcher> = crate::config::decode_matches(&Value::Array(matches.clone()))
            .expect("valid")
            .iter()
            .map(|c| Matcher::new(c).expect("no regex"))
            .collect();
        let hm = HeaderMap::new();
        let first = |ms: &[&Matcher]| with_request(&q, None, &hm, |r| ms.iter().position(|m| m.matches(r)));
        let listed: Vec<&Matcher> = matchers.iter().collect();
        let chosen = first(&listed);
        if let Some(i) = chosen {
            let tail = matcher(PathMatch::Prefix(extra));
            let longer: Vec<&Matcher> = listed.iter().copied().chain([&tail]).collect();
            prop_assert_eq!(first(&longer), Some(i));
            // Never `q` itself, so it cannot match.
            let front = matcher(PathMatch::Exact(format!("{q}/x")));
            let shifted: Vec<&Matcher> = [&front].into_iter().chain(listed.iter().copied()).collect();
            prop_assert_eq!(first(&shifted), Some(i + 1));
        }
        let described = RequestDescription { method: "GET", host: None, path: &q, headers: &[] };
        let explained = explain_routes(&Value::Array(matches), &described).expect("explains");
        prop_assert_eq!(explained["chosen"].as_u64().map(|i| i as usize), chosen);
    }
}
