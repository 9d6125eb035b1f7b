//! The data plane's own decisions, replayed for `meshctl explain`: which
//! route a request takes and why the ones before it did not match, and what
//! a listener's authorization decides and by which rule. They run the very
//! matcher and rules the proxy runs, so explain cannot disagree with it.
//! Reasons are worded for people; values are quoted as `'x'`, an absent
//! one is `absent`, several are `'a' or 'b'`.

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use serde_json::{json, Value};

use crate::config::{decode_authorization, decode_matches, Action, MatchConfig, PathMatch};
use crate::error::{ConfigIssue, Error, Result};
use crate::pki::SpiffeId;
use crate::policy::authz::{Authorization, Decision, Miss, Rule};
use crate::route::{percent_decode, Matcher, Mismatch, RequestView};

/// A request as explain describes it: `path` may carry a query string.
pub struct RequestDescription<'a> {
    pub method: &'a str,
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub headers: &'a [(String, String)],
}

fn invalid(path: &str, message: String) -> Error {
    Error::Config(vec![ConfigIssue {
        path: path.to_string(),
        message,
    }])
}

fn method(m: &str) -> Result<Method> {
    Method::from_bytes(m.to_ascii_uppercase().as_bytes())
        .map_err(|_| invalid("request.method", format!("'{m}' is not an HTTP method")))
}

fn quoted(v: Option<&str>) -> String {
    v.map_or_else(|| "absent".to_string(), |v| format!("'{v}'"))
}

// === routes ===

/// Tries `matches` (one per route, in the listener's order) on the request
/// as the proxy does: first match wins. Returns `{"chosen": index or null,
/// "reasons": [...]}` with one reason per route tried, up to the chosen one
/// (whose reason is "matched").
pub fn explain_routes(matches: &Value, req: &RequestDescription<'_>) -> Result<Value> {
    let configs = decode_matches(matches)?;
    let method = method(req.method)?;
    let mut headers = HeaderMap::new();
    for (i, (name, value)) in req.headers.iter().enumerate() {
        let at = format!("request.headers[{i}]");
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(&at, format!("'{name}' is not a header name")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| invalid(&at, format!("'{value}' is not a header value")))?;
        headers.append(name, value);
    }
    let host = req
        .host
        .map(|h| {
            h.rsplit_once(':')
                .map_or(h, |(name, _)| name)
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let (path, query) = match req.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (req.path, None),
    };
    let view = RequestView {
        method: &method,
        host: &host,
        path,
        query,
        headers: &headers,
    };
    let mut reasons = Vec::new();
    for (i, cfg) in configs.iter().enumerate() {
        let matcher = Matcher::new(cfg).map_err(|e| {
            invalid(
                &format!("matches[{i}].path_regex"),
                format!("invalid regex: {e}"),
            )
        })?;
        match matcher.mismatch(&view) {
            None => {
                reasons.push("matched".to_string());
                return Ok(json!({"chosen": i, "reasons": reasons}));
            }
            Some(miss) => reasons.push(route_reason(cfg, miss, &view)),
        }
    }
    Ok(json!({"chosen": null, "reasons": reasons}))
}

fn route_reason(cfg: &MatchConfig, miss: Mismatch, req: &RequestView<'_>) -> String {
    match miss {
        Mismatch::Method => {
            let want = cfg.method.as_ref().map_or("", Method::as_str);
            format!("method {} is not {want}", req.method)
        }
        Mismatch::Host => {
            let want = cfg.host.as_deref().unwrap_or_default();
            format!("host {} is not {want}", quoted(Some(req.host)))
        }
        Mismatch::Path => match &cfg.path {
            PathMatch::Exact(p) => format!("path '{}' is not exactly '{p}'", req.path),
            PathMatch::Prefix(p) => format!("path '{}' is not under prefix '{p}'", req.path),
            PathMatch::Regex(r) => format!("path '{}' does not match regex '{r}'", req.path),
            PathMatch::Any => format!("path '{}'", req.path),
        },
        Mismatch::Header(i) => {
            let (name, want) = &cfg.headers[i];
            let got = req.headers.get(name).and_then(|v| v.to_str().ok());
            format!("header {name} is {}, not '{want}'", quoted(got))
        }
        Mismatch::HeaderRegex(i) => {
            let (name, pattern) = &cfg.header_regex[i];
            let got = req.headers.get(name).and_then(|v| v.to_str().ok());
            format!(
                "header {name} is {}, which does not match regex '{pattern}'",
                quoted(got)
            )
        }
        Mismatch::Query(i) => {
            let (name, want) = &cfg.query[i];
            let values: Vec<String> = req
                .query
                .unwrap_or_default()
                .split('&')
                .filter_map(|pair| {
                    let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (*percent_decode(n) == *name.as_bytes())
                        .then(|| format!("'{}'", String::from_utf8_lossy(&percent_decode(v))))
                })
                .collect();
            let got = if values.is_empty() {
                "absent".to_string()
            } else {
                values.join(" or ")
            };
            format!("query param {name} is {got}, not '{want}'")
        }
    }
}

// === authorization ===

/// What an `authorization` block decides for a caller (`peer`, a SPIFFE ID;
/// None for plaintext) and an HTTP request (`op`; None for a TCP
/// connection): `{"decision", "decided_by", "rules": [{"rule", "action",
/// "matched", "reason"}]}`, rules in the order they are tried.
pub fn explain_authorization(
    block: &Value,
    peer: Option<&str>,
    op: Option<(&str, &str)>,
) -> Result<Value> {
    let authz = Authorization::new(&decode_authorization(block)?);
    let peer = match peer {
        None => None,
        Some(p) => Some(
            SpiffeId::parse(p)
                .ok_or_else(|| invalid("peer", format!("'{p}' is not a SPIFFE ID")))?,
        ),
    };
    let op = match op {
        None => None,
        Some((m, path)) => Some((method(m)?, path)),
    };
    let op_ref = op.as_ref().map(|(m, p)| (m, *p));
    let (decision, decided_by) = match authz.decide(peer.as_ref(), op_ref) {
        Decision::Allow(by) => ("allow", by),
        Decision::Deny(by) => ("deny", by),
    };
    let mut decided = false;
    let mut rules = Vec::new();
    for rule in authz.rules() {
        let (matched, reason) = if decided {
            (false, format!("not tried: {decided_by} decided"))
        } else {
            match rule.miss(peer.as_ref(), op_ref) {
                None => {
                    decided = true;
                    (true, "matched".to_string())
                }
                Some(miss) => (false, rule_reason(rule, miss, peer.as_ref(), op_ref)),
            }
        };
        let action = match rule.action {
            Action::Allow => "allow",
            Action::Deny => "deny",
        };
        rules.push(
            json!({"rule": rule.name, "action": action, "matched": matched, "reason": reason}),
        );
    }
    Ok(json!({"decision": decision, "decided_by": decided_by, "rules": rules}))
}

fn rule_reason(
    rule: &Rule,
    miss: Miss,
    peer: Option<&SpiffeId>,
    op: Option<(&Method, &str)>,
) -> String {
    let wanted = rule.wanted(miss).join(", ");
    let (label, value) = match miss {
        Miss::Principal => ("principal", peer.map(SpiffeId::as_str)),
        Miss::Namespace => ("namespace", peer.and_then(SpiffeId::namespace)),
        Miss::Service => ("service", peer.and_then(SpiffeId::service)),
        Miss::Path => ("path", op.map(|(_, p)| p)),
        Miss::Method => {
            let m = op.map_or("absent", |(m, _)| m.as_str());
            return format!("method {m} is none of {wanted}");
        }
        Miss::NoOperation => return "a TCP connection has no path or method to match".into(),
    };
    format!("{label} {} matches none of {wanted}", quoted(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(
        method: &'a str,
        path: &'a str,
        headers: &'a [(String, String)],
    ) -> RequestDescription<'a> {
        RequestDescription {
            method,
            host: Some("Shop.Example:8080"),
            path,
            headers,
        }
    }

    #[test]
    fn routes_say_why_each_one_before_the_winner_failed() {
        let matches = json!([
            {"path": "/exact", "method": "GET"},
            {"method": "POST"},
            {"host": "other.example"},
            {"path_prefix": "/api", "headers": {"x-canary": "true"}},
            {"path_prefix": "/api", "query": {"v": "2"}},
            {"path_regex": "/api/[0-9]+"},
            null,
        ]);
        let headers = [("X-Other".to_string(), "1".to_string())];
        let got = explain_routes(&matches, &request("get", "/api/7?v=1&v=%33", &headers)).unwrap();
        assert_eq!(got["chosen"], 5);
        assert_eq!(
            got["reasons"],
            json!([
                "path '/api/7' is not exactly '/exact'",
                "method GET is not POST",
                "host 'shop.example' is not other.example",
                "header x-canary is absent, not 'true'",
                "query param v is '1' or '3', not '2'",
                "matched",
            ])
        );
        let none = explain_routes(&json!([{"path": "/x"}]), &request("GET", "/y", &[])).unwrap();
        assert_eq!(
            none,
            json!({"chosen": null, "reasons": ["path '/y' is not exactly '/x'"]})
        );
    }

    #[test]
    fn bad_matches_are_config_errors_with_paths() {
        let Err(Error::Config(issues)) = explain_routes(
            &json!([null, {"path_regex": "(?=x)"}]),
            &request("GET", "/", &[]),
        ) else {
            panic!("a look-ahead is not supported by the data plane's regex engine");
        };
        assert!(issues[0].path == "matches[1].path_regex", "{issues:?}");
    }

    #[test]
    fn authorization_is_the_data_planes_decision_with_reasons() {
        let block = json!({"rules": [
            {"name": "allow-web", "action": "allow", "services": ["web*"], "methods": ["GET"]},
            {"name": "no-admin", "action": "deny", "paths": ["/admin/*"]},
        ]});
        let web = "spiffe://td/ns/shop/sa/web";
        let got = explain_authorization(&block, Some(web), Some(("GET", "/items"))).unwrap();
        assert_eq!(got["decision"], "allow");
        assert_eq!(got["decided_by"], "allow-web");
        assert_eq!(
            got["rules"][0]["reason"], "path '/items' matches none of /admin/*",
            "DENY rules are tried first"
        );
        assert_eq!(got["rules"][1]["matched"], true);
        let post = explain_authorization(&block, Some(web), Some(("POST", "/items"))).unwrap();
        assert_eq!(post["decided_by"], "no ALLOW rule matched");
        assert_eq!(post["rules"][1]["reason"], "method POST is none of GET");
        let plain = explain_authorization(&block, None, None).unwrap();
        assert_eq!(
            plain["rules"][0]["matched"], true,
            "a path-scoped DENY applies to TCP"
        );
        assert_eq!(plain["rules"][1]["reason"], "not tried: no-admin decided");
        assert_eq!(plain["decision"], "deny");
        let other = "spiffe://td/ns/shop/sa/batch";
        let admin = explain_authorization(&block, Some(other), Some(("GET", "/admin/x"))).unwrap();
        assert_eq!(admin["decided_by"], "no-admin");
        let svc = explain_authorization(&json!({"rules": [block["rules"][0]]}), Some(other), None);
        assert_eq!(
            svc.unwrap()["rules"][0]["reason"],
            "service 'batch' matches none of web*"
        );
    }
}
