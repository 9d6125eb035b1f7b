//! The route matcher with its filters: a listener's routes built from
//! generated match, rewrite, redirect and header-edit sections (the decoder
//! decides which are valid), then generated requests run through matching,
//! header edits, rewrites, the redirect builder and the backend pick. Never
//! a panic; a route the decoder accepted always compiles.

#![no_main]

use _core::fuzzing::http_routes;
use _core::Config;
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use meshctl_fuzz::{AnyMethod, PathWords, RequestSpec, Word};
use serde_json::{json, Map, Value};

#[derive(Debug, Arbitrary)]
enum PathKind {
    Exact,
    Prefix,
    /// The words joined as a pattern.
    Regex,
}

#[derive(Debug, Arbitrary)]
struct Edits {
    set: Vec<(Word, Word)>,
    add: Vec<(Word, Word)>,
    remove: Vec<Word>,
}

#[derive(Debug, Arbitrary)]
struct NewPath {
    /// `path_prefix` (replace what the match's prefix covered) or `path`.
    prefix: bool,
    path: PathWords,
}

#[derive(Debug, Arbitrary)]
enum Action {
    Forward {
        /// Weights of clusters `a` and `b`; an empty list is refused.
        weights: Vec<u8>,
        rewrite_host: Option<Word>,
        rewrite_path: Option<NewPath>,
    },
    Redirect {
        https: Option<bool>,
        host: Option<Word>,
        port: Option<u16>,
        path: Option<NewPath>,
        status: Option<u16>,
    },
}

#[derive(Debug, Arbitrary)]
struct RouteSpec {
    host: Option<Word>,
    path: Option<(PathKind, PathWords)>,
    method: Option<AnyMethod>,
    headers: Vec<(Word, Word)>,
    header_regex: Vec<(Word, Word)>,
    query: Vec<(Word, Word)>,
    action: Action,
    request_headers: Option<Edits>,
    response_headers: Option<Edits>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    routes: Vec<RouteSpec>,
    requests: Vec<RequestSpec>,
}

fn map(pairs: &[(Word, Word)]) -> Value {
    let m: Map<String, Value> = pairs
        .iter()
        .map(|(k, v)| (k.0.clone(), Value::String(v.0.clone())))
        .collect();
    Value::Object(m)
}

fn edits(e: &Edits) -> Value {
    let remove: Vec<&str> = e.remove.iter().map(|w| w.0.as_str()).collect();
    json!({"set": map(&e.set), "add": map(&e.add), "remove": remove})
}

fn new_path(into: &mut Map<String, Value>, p: &NewPath) {
    let key = if p.prefix { "path_prefix" } else { "path" };
    into.insert(key.into(), p.path.path().into());
}

fn route(spec: &RouteSpec) -> Value {
    let mut m = Map::new();
    if let Some(h) = &spec.host {
        m.insert("host".into(), h.0.clone().into());
    }
    if let Some((kind, words)) = &spec.path {
        let (key, value) = match kind {
            PathKind::Exact => ("path", words.path()),
            PathKind::Prefix => ("path_prefix", words.path()),
            PathKind::Regex => ("path_regex", words.0.iter().map(|w| w.0.as_str()).collect()),
        };
        m.insert(key.into(), value.into());
    }
    if let Some(method) = &spec.method {
        m.insert("method".into(), method.0.as_str().into());
    }
    m.insert("headers".into(), map(&spec.headers));
    m.insert("header_regex".into(), map(&spec.header_regex));
    m.insert("query".into(), map(&spec.query));
    let mut r = Map::new();
    r.insert("match".into(), Value::Object(m));
    match &spec.action {
        Action::Forward {
            weights,
            rewrite_host,
            rewrite_path,
        } => {
            let backends: Vec<Value> = weights
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let cluster = if i % 2 == 0 { "a" } else { "b" };
                    json!({"cluster": cluster, "weight": w})
                })
                .collect();
            r.insert("backends".into(), backends.into());
            let mut rw = Map::new();
            if let Some(h) = rewrite_host {
                rw.insert("host".into(), h.0.clone().into());
            }
            if let Some(p) = rewrite_path {
                new_path(&mut rw, p);
            }
            if !rw.is_empty() {
                r.insert("rewrite".into(), Value::Object(rw));
            }
        }
        Action::Redirect {
            https,
            host,
            port,
            path,
            status,
        } => {
            let mut rd = Map::new();
            if let Some(https) = https {
                rd.insert(
                    "scheme".into(),
                    if *https { "https" } else { "http" }.into(),
                );
            }
            if let Some(h) = host {
                rd.insert("host".into(), h.0.clone().into());
            }
            if let Some(p) = port {
                rd.insert("port".into(), (*p).into());
            }
            if let Some(p) = path {
                new_path(&mut rd, p);
            }
            if let Some(s) = status {
                rd.insert("status".into(), (*s).into());
            }
            r.insert("redirect".into(), Value::Object(rd));
        }
    }
    if let Some(e) = &spec.request_headers {
        r.insert("request_headers".into(), edits(e));
    }
    if let Some(e) = &spec.response_headers {
        r.insert("response_headers".into(), edits(e));
    }
    Value::Object(r)
}

fuzz_target!(|input: Input| {
    let routes: Vec<Value> = input.routes.iter().map(route).collect();
    let doc = json!({
        "listeners": [{"name": "l", "address": "127.0.0.1:0", "routes": routes}],
        "clusters": [{"name": "a", "endpoints": []}, {"name": "b", "endpoints": []}],
    });
    let Ok(config) = Config::from_value(doc) else {
        return;
    };
    let compiled = http_routes(&config).expect("accepted routes compile");
    let [listener] = &compiled[..] else {
        panic!("one HTTP listener, got {}", compiled.len());
    };
    for spec in &input.requests {
        let Some(parts) = spec.parts() else {
            continue;
        };
        let Some(handled) = listener.handle(&parts) else {
            continue;
        };
        assert!(handled.index < listener.len());
        if let Some(location) = &handled.location {
            // A relative reference only when no host is known.
            assert!(
                location.starts_with('/') || location.starts_with("http"),
                "{location}"
            );
        }
    }
});
