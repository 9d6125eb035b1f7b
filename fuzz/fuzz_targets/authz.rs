//! The authorization globs and rules: a glob agrees with a plain
//! dynamic-programming matcher and prints back as written; a decoded
//! authorization section decides every request without panicking, always by
//! a rule of the matching action or by its default.

#![no_main]

use _core::fuzzing::{decode_authorization, Action, Authorization, Decision, Glob, SpiffeId};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use meshctl_fuzz::{AnyMethod, PathWords, Word};
use serde_json::{json, Value};

#[derive(Debug, Arbitrary)]
struct RuleSpec {
    name: Option<Word>,
    allow: bool,
    principals: Vec<Word>,
    namespaces: Vec<Word>,
    services: Vec<Word>,
    paths: Vec<Word>,
    methods: Vec<AnyMethod>,
}

/// A peer (a SPIFFE ID, if it parses) and an operation (None: a TCP connection).
#[derive(Debug, Arbitrary)]
struct Request {
    peer: Option<Word>,
    op: Option<(AnyMethod, PathWords)>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    /// (pattern, text) pairs for the glob alone.
    globs: Vec<(Word, Word)>,
    deny_by_default: bool,
    rules: Vec<RuleSpec>,
    requests: Vec<Request>,
}

/// The reference: `*` matches any run of characters (dynamic programming
/// over characters, quadratic and obviously right).
fn model(pattern: &str, text: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    // reach[j]: the pattern so far matches the first j characters of text.
    let mut reach = vec![false; t.len() + 1];
    reach[0] = true;
    for p in pattern.chars() {
        if p == '*' {
            for j in 1..reach.len() {
                reach[j] |= reach[j - 1];
            }
        } else {
            for j in (1..reach.len()).rev() {
                reach[j] = reach[j - 1] && t[j - 1] == p;
            }
            reach[0] = false;
        }
    }
    reach[t.len()]
}

fn words(ws: &[Word]) -> Vec<&str> {
    ws.iter().map(|w| w.0.as_str()).collect()
}

fn section(input: &Input) -> Value {
    let rules: Vec<Value> = input
        .rules
        .iter()
        .map(|r| {
            let methods: Vec<&str> = r.methods.iter().map(|m| m.0.as_str()).collect();
            let mut v = json!({
                "action": if r.allow { "allow" } else { "deny" },
                "principals": words(&r.principals),
                "namespaces": words(&r.namespaces),
                "services": words(&r.services),
                "paths": words(&r.paths),
                "methods": methods,
            });
            if let Some(name) = &r.name {
                v["name"] = name.0.clone().into();
            }
            v
        })
        .collect();
    let default = if input.deny_by_default {
        "deny"
    } else {
        "allow"
    };
    json!({"default": default, "rules": rules})
}

fuzz_target!(|input: Input| {
    for (pattern, text) in &input.globs {
        let glob = Glob::new(&pattern.0);
        assert_eq!(glob.pattern(), pattern.0);
        assert_eq!(
            glob.matches(&text.0),
            model(&pattern.0, &text.0),
            "{pattern:?} ~ {text:?}"
        );
    }
    let Ok(cfg) = decode_authorization(&section(&input)) else {
        return;
    };
    let authz = Authorization::new(&cfg);
    let has_allow = cfg.rules.iter().any(|r| r.action == Action::Allow);
    for Request { peer, op } in &input.requests {
        let peer = peer.as_ref().and_then(|p| SpiffeId::parse(&p.0));
        let path;
        let op = match op {
            Some((method, words)) => {
                path = words.path();
                Some((&method.0, path.as_str()))
            }
            None => None,
        };
        let by_rule = |name: &str, action| {
            cfg.rules
                .iter()
                .any(|r| r.name == name && r.action == action)
        };
        match authz.decide(peer.as_ref(), op) {
            Decision::Allow(name) => assert!(
                by_rule(name, Action::Allow)
                    || (name == "default allow" && !has_allow && !input.deny_by_default)
            ),
            Decision::Deny(name) => assert!(
                by_rule(name, Action::Deny)
                    || (name == "no ALLOW rule matched" && has_allow)
                    || (name == "default deny" && !has_allow && input.deny_by_default)
            ),
        }
    }
});
