//! The decoder's primitives: a walk over a JSON document that collects
//! every problem with its field path instead of stopping at the first one, as
//! serde would. Each section of the config (`listener`, `route`, ...) adds
//! its own `impl Decoder` block on top of these.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::{ConfigIssue, Error, Result};

/// The largest weight of a backend or an endpoint.
pub(super) const MAX_WEIGHT: u64 = 10_000;

/// Walks the document, collecting every issue rather than failing fast.
#[derive(Default)]
pub struct Decoder {
    pub issues: Vec<ConfigIssue>,
    /// The document has no `identity`: mesh TLS anywhere is an error.
    pub(super) no_identity: bool,
}

/// An object being decoded, with its location in the document.
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    pub(super) path: String,
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

// === impl Fields ===

impl<'a> Fields<'a> {
    pub(super) fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// The keys given (null values included).
    pub(super) fn keys(&self) -> impl Iterator<Item = &'a str> {
        self.map.keys().map(String::as_str)
    }
}

// === impl Decoder ===

impl Decoder {
    /// The decoded value when nothing was wrong; every issue otherwise.
    pub(super) fn finish<T>(self, decoded: Option<T>) -> Result<T> {
        match decoded {
            Some(v) if self.issues.is_empty() => Ok(v),
            _ => Err(Error::Config(self.issues)),
        }
    }

    pub(super) fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn object<'a>(
        &mut self,
        v: &'a Value,
        path: &str,
        allowed: &[&str],
    ) -> Option<Fields<'a>> {
        let Value::Object(map) = v else {
            self.err(path, format!("expected a mapping, got {}", type_name(v)));
            return None;
        };
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                self.err(
                    join(path, key),
                    format!("unknown field (expected one of: {})", allowed.join(", ")),
                );
            }
        }
        Some(Fields {
            map,
            path: path.to_string(),
        })
    }

    pub(super) fn string(&mut self, f: &Fields<'_>, key: &str, required: bool) -> Option<String> {
        match f.get(key) {
            None => {
                if required {
                    self.err(f.at(key), "required");
                }
                None
            }
            Some(Value::String(s)) if s.is_empty() => {
                self.err(f.at(key), "must not be empty");
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.err(
                    f.at(key),
                    format!("expected a string, got {}", type_name(other)),
                );
                None
            }
        }
    }

    pub(super) fn uint(&mut self, f: &Fields<'_>, key: &str, min: u64, max: u64) -> Option<u64> {
        let v = f.get(key)?;
        match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                self.err(f.at(key), format!("{n} is out of range {min}..={max}"));
                None
            }
            None => {
                self.err(
                    f.at(key),
                    format!("expected a whole number, got {}", type_name(v)),
                );
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, f: &Fields<'_>, key: &str) -> Option<bool> {
        let v = f.get(key)?;
        let b = v.as_bool();
        if b.is_none() {
            self.err(
                f.at(key),
                format!("expected true or false, got {}", type_name(v)),
            );
        }
        b
    }

    /// A number, fractions allowed, that `ok` accepts (`range` names it in the error).
    fn number(
        &mut self,
        f: &Fields<'_>,
        key: &str,
        ok: impl Fn(f64) -> bool,
        range: &str,
    ) -> Option<f64> {
        let v = f.get(key)?;
        match v.as_f64() {
            Some(n) if ok(n) => Some(n),
            Some(n) => {
                self.err(f.at(key), format!("{n} is out of range {range}"));
                None
            }
            None => {
                self.err(
                    f.at(key),
                    format!("expected a number, got {}", type_name(v)),
                );
                None
            }
        }
    }

    /// A share in percent, 0..=100, fractions allowed.
    pub(super) fn percent(&mut self, f: &Fields<'_>, key: &str) -> Option<f64> {
        self.number(f, key, |p| (0.0..=100.0).contains(&p), "0..=100")
    }

    /// A positive rate (per second), fractions allowed.
    pub(super) fn rate(&mut self, f: &Fields<'_>, key: &str, required: bool) -> Option<f64> {
        if required && f.get(key).is_none() {
            self.err(f.at(key), "required");
        }
        self.number(f, key, |r| r > 0.0 && r <= 10_000_000.0, "(0, 10000000]")
    }

    /// A list of HTTP statuses.
    pub(super) fn statuses(&mut self, f: &Fields<'_>, key: &str) -> Vec<u16> {
        self.list(f, key, false)
            .into_iter()
            .filter_map(|(at, item)| match item.as_u64() {
                Some(c @ 100..=599) => Some(c as u16),
                _ => {
                    self.err(at, "expected an HTTP status 100..=599");
                    None
                }
            })
            .collect()
    }

    pub(super) fn millis(&mut self, f: &Fields<'_>, key: &str, default: u64) -> Duration {
        Duration::from_millis(self.uint(f, key, 1, 86_400_000).unwrap_or(default))
    }

    pub(super) fn list<'a>(
        &mut self,
        f: &Fields<'a>,
        key: &str,
        required: bool,
    ) -> Vec<(String, &'a Value)> {
        match f.get(key) {
            None => {
                if required {
                    self.err(f.at(key), "required");
                }
                Vec::new()
            }
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{}[{i}]", f.at(key)), v))
                .collect(),
            Some(other) => {
                self.err(
                    f.at(key),
                    format!("expected a list, got {}", type_name(other)),
                );
                Vec::new()
            }
        }
    }

    pub(super) fn socket_addr(&mut self, f: &Fields<'_>, key: &str) -> Option<SocketAddr> {
        let s = self.string(f, key, true)?;
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(f.at(key), format!("'{s}' is not an IP:port address"));
                None
            }
        }
    }

    pub(super) fn name(
        &mut self,
        f: &Fields<'_>,
        seen: &mut HashSet<String>,
        what: &str,
    ) -> Option<String> {
        let name = self.string(f, "name", true)?;
        let valid = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'));
        if !valid {
            self.err(
                f.at("name"),
                format!("'{name}' may only hold letters, digits and - _ . : /"),
            );
        }
        if !seen.insert(name.clone()) {
            self.err(f.at("name"), format!("duplicate {what} name '{name}'"));
        }
        Some(name)
    }

    /// A mapping of strings, as `(path, key, value)`; other values are reported.
    pub(super) fn string_map(
        &mut self,
        f: &Fields<'_>,
        key: &str,
    ) -> Vec<(String, String, String)> {
        let Some(v) = f.get(key) else {
            return Vec::new();
        };
        let path = f.at(key);
        let Value::Object(map) = v else {
            self.err(path, format!("expected a mapping, got {}", type_name(v)));
            return Vec::new();
        };
        let mut out = Vec::with_capacity(map.len());
        for (k, value) in map {
            let at = join(&path, k);
            match value {
                Value::String(s) => out.push((at, k.clone(), s.clone())),
                other => self.err(at, format!("expected a string, got {}", type_name(other))),
            }
        }
        out
    }

    pub(super) fn need_identity(&mut self, path: &str) {
        if self.no_identity {
            self.err(
                path,
                "mesh mTLS needs the proxy's identity (the top-level identity section)",
            );
        }
    }
}
