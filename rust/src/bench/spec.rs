//! What to benchmark and how, parsed from the options `meshctl bench` takes.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::Method;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpMode {
    /// Write a message, read it back, time the round trip.
    Echo,
    /// Write as fast as possible (and drain whatever comes back): throughput.
    Bulk,
}

#[derive(Clone, Debug)]
pub enum Target {
    Http {
        /// host:port to connect to.
        addr: String,
        path: String,
        http2: bool,
    },
    Tcp {
        addr: String,
        mode: TcpMode,
        size: usize,
    },
}

#[derive(Clone, Debug)]
pub struct BenchSpec {
    pub url: String,
    pub target: Target,
    pub connections: usize,
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    /// Open loop at this aggregate rate; closed loop when None.
    pub rps: Option<f64>,
    pub timeout: Duration,
    pub threads: usize,
    pub method: Method,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

/// Splits `scheme://host:port/path`; the port is required for tcp.
fn split_url(url: &str) -> Result<(&str, &str, &str), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("url: '{url}' has no scheme (http://, h2c://, tcp://)"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        return Err(format!("url: '{url}' has no host"));
    }
    Ok((scheme, host, path))
}

fn with_port(host: &str, default: u16) -> String {
    let has_port = host
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok());
    if has_port {
        host.to_string()
    } else {
        format!("{host}:{default}")
    }
}

impl BenchSpec {
    /// Builds a spec from the JSON object the Python CLI sends; errors name the option.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let url = field(v, "url")
            .and_then(Value::as_str)
            .ok_or("url: required")?
            .to_string();
        let (scheme, host, path) = split_url(&url)?;
        let uint = |key: &str, default: u64| -> Result<u64, String> {
            match field(v, key) {
                None => Ok(default),
                Some(x) => x
                    .as_u64()
                    .ok_or_else(|| format!("{key}: expected a whole number")),
            }
        };
        let http2 = field(v, "http2").and_then(Value::as_bool).unwrap_or(false) || scheme == "h2c";
        let target = match scheme {
            "http" | "h2c" => Target::Http {
                addr: with_port(host, 80),
                path: path.to_string(),
                http2,
            },
            "tcp" => {
                if !host.contains(':') {
                    return Err(format!("url: '{url}' needs a port"));
                }
                let mode = match field(v, "tcp_mode")
                    .and_then(Value::as_str)
                    .unwrap_or("echo")
                {
                    "echo" => TcpMode::Echo,
                    "bulk" => TcpMode::Bulk,
                    other => return Err(format!("tcp_mode: '{other}' is not one of: echo, bulk")),
                };
                let size = uint("size", if mode == TcpMode::Echo { 64 } else { 64 * 1024 })?;
                if size == 0 || size > 16 << 20 {
                    return Err("size: must be 1 byte to 16 MiB".into());
                }
                Target::Tcp {
                    addr: host.to_string(),
                    mode,
                    size: size as usize,
                }
            }
            other => {
                return Err(format!(
                    "url: scheme '{other}' is not one of: http, h2c, tcp"
                ))
            }
        };
        let connections = uint("connections", 10)?;
        if connections == 0 || connections > 100_000 {
            return Err("connections: must be 1 to 100000".into());
        }
        let requests = field(v, "requests")
            .map(|_| uint("requests", 0))
            .transpose()?;
        if requests == Some(0) {
            return Err("requests: must be at least 1".into());
        }
        let seconds = |key: &str| -> Result<Option<Duration>, String> {
            match field(v, key) {
                None => Ok(None),
                Some(x) => match x.as_f64() {
                    Some(s) if s > 0.0 && s.is_finite() => Ok(Some(Duration::from_secs_f64(s))),
                    _ => Err(format!("{key}: expected a positive number of seconds")),
                },
            }
        };
        let mut duration = seconds("duration")?;
        if duration.is_none() && requests.is_none() {
            duration = Some(Duration::from_secs(10));
        }
        let rps = match field(v, "rps") {
            None => None,
            Some(x) => match x.as_f64() {
                Some(r) if r > 0.0 && r.is_finite() => Some(r),
                _ => return Err("rps: expected a positive number".into()),
            },
        };
        if rps.is_some() && duration.is_none() {
            duration =
                requests.map(|n| Duration::from_secs_f64(n as f64 / rps.unwrap_or(1.0) + 1.0));
        }
        let method = field(v, "method")
            .and_then(Value::as_str)
            .unwrap_or("GET")
            .to_ascii_uppercase();
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("method: '{method}' is not valid"))?;
        let mut headers = Vec::new();
        if let Some(hs) = field(v, "headers") {
            for h in hs
                .as_array()
                .ok_or("headers: expected a list of 'Name: value'")?
            {
                let line = h.as_str().ok_or("headers: expected strings")?;
                let (name, value) = line
                    .split_once(':')
                    .ok_or_else(|| format!("headers: '{line}' is not 'Name: value'"))?;
                let name = HeaderName::from_bytes(name.trim().as_bytes())
                    .map_err(|_| format!("headers: '{name}' is not a header name"))?;
                let value = HeaderValue::from_str(value.trim())
                    .map_err(|_| format!("headers: bad value in '{line}'"))?;
                headers.push((name, value));
            }
        }
        let body = Bytes::from(
            field(v, "body")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        );
        let threads = uint("threads", 0)? as usize;
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        Ok(BenchSpec {
            url,
            target,
            connections: connections as usize,
            duration,
            requests,
            rps,
            timeout: seconds("timeout")?.unwrap_or(Duration::from_secs(10)),
            threads,
            method,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_targets() {
        let s = BenchSpec::from_json(&json!({"url": "http://127.0.0.1:8080/x?y=1"})).unwrap();
        assert!(
            matches!(&s.target, Target::Http { addr, path, http2: false } if addr == "127.0.0.1:8080" && path == "/x?y=1")
        );
        assert_eq!(s.duration, Some(Duration::from_secs(10)));
        let s = BenchSpec::from_json(&json!({"url": "h2c://localhost", "requests": 5})).unwrap();
        assert!(
            matches!(&s.target, Target::Http { addr, http2: true, .. } if addr == "localhost:80")
        );
        assert_eq!(s.duration, None);
        let s =
            BenchSpec::from_json(&json!({"url": "tcp://127.0.0.1:9", "tcp_mode": "bulk"})).unwrap();
        assert!(matches!(
            s.target,
            Target::Tcp {
                mode: TcpMode::Bulk,
                size: 65536,
                ..
            }
        ));
    }

    #[test]
    fn errors_name_the_option() {
        let err = |v: Value| BenchSpec::from_json(&v).unwrap_err();
        assert!(err(json!({"url": "ftp://x"})).starts_with("url:"));
        assert!(err(json!({"url": "tcp://x"})).starts_with("url:"));
        assert!(err(json!({"url": "http://x", "connections": 0})).starts_with("connections:"));
        assert!(err(json!({"url": "http://x", "rps": -1})).starts_with("rps:"));
        assert!(err(json!({"url": "http://x", "headers": ["nocolon"]})).starts_with("headers:"));
    }

    #[test]
    fn open_loop_with_a_request_count_gets_a_duration() {
        let s = BenchSpec::from_json(&json!({"url": "http://x:1", "rps": 100, "requests": 200}))
            .unwrap();
        assert_eq!(s.duration, Some(Duration::from_secs(3)));
    }
}
