//! One request's record for the access log, its span and tap: built only
//! when one of them wants it (the listener logs, the trace is sampled and
//! exported, or a tap is open), filled in along the forwarding path, and
//! handed off when the response has ended (or the client went away). The
//! request path only moves it around; formatting happens on the log
//! writer's thread, and encoding on the exporter's.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Method, Uri, Version};
use serde_json::{json, Value};

use super::access_log::LogWriter;
use super::context::{incoming_trace_id, SpanContext};
use super::export::Tracer;
use super::flags;
use super::tap::TapHub;
use crate::config::{Direction, LogFormat};
use crate::pki::SpiffeId;

/// Request headers a tap may show; every other one stays private.
pub const TAP_HEADERS: [&str; 5] = [
    "user-agent",
    "content-type",
    "content-length",
    "accept",
    "x-request-id",
];

/// Where a finished exchange goes.
#[derive(Default)]
pub struct Sinks {
    pub log: Option<(Arc<LogWriter>, LogFormat)>,
    pub tracer: Option<Arc<Tracer>>,
    pub tap: Option<Arc<TapHub>>,
}

impl Sinks {
    pub fn any(&self) -> bool {
        self.log.is_some() || self.tracer.is_some() || self.tap.is_some()
    }
}

pub struct Exchange {
    pub started: Instant,
    pub started_at: SystemTime,
    pub direction: Direction,
    pub listener: Arc<str>,
    pub route: Arc<str>,
    pub destination: Arc<str>,
    pub client: SocketAddr,
    pub identity: Option<Arc<SpiffeId>>,
    /// None for a TCP connection.
    pub method: Option<Method>,
    /// The request target and Host header as they came (shared buffers:
    /// cloning them allocates nothing).
    pub uri: Uri,
    pub host: Option<HeaderValue>,
    pub version: Version,
    pub status: u16,
    pub grpc_status: Option<u16>,
    pub flags: u16,
    pub retries: u32,
    pub upstream: Option<String>,
    pub upstream_head: Option<Duration>,
    pub ended: Option<Duration>,
    pub request_bytes: Arc<AtomicU64>,
    pub response_bytes: u64,
    pub request_id: Option<HeaderValue>,
    /// This hop's span, when the proxy makes them.
    pub trace: Option<SpanContext>,
    /// The trace it belongs to (the span's, or the one the request came with).
    pub trace_id: Option<u128>,
    pub tap_headers: Vec<(&'static str, String)>,
    pub sinks: Sinks,
}

impl Exchange {
    /// A record of a TCP connection (no method; the fields of a request
    /// are filled in by `http`).
    pub fn connection(
        sinks: Sinks,
        direction: Direction,
        listener: Arc<str>,
        client: SocketAddr,
        identity: Option<Arc<SpiffeId>>,
    ) -> Box<Exchange> {
        Box::new(Exchange {
            started: Instant::now(),
            started_at: SystemTime::now(),
            direction,
            listener,
            route: "".into(),
            destination: "".into(),
            client,
            identity,
            method: None,
            uri: Uri::default(),
            host: None,
            version: Version::HTTP_11,
            status: 0,
            grpc_status: None,
            flags: 0,
            retries: 0,
            upstream: None,
            upstream_head: None,
            ended: None,
            request_bytes: Arc::new(AtomicU64::new(0)),
            response_bytes: 0,
            request_id: None,
            trace: None,
            trace_id: None,
            tap_headers: Vec::new(),
            sinks,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn http(
        sinks: Sinks,
        direction: Direction,
        listener: Arc<str>,
        client: SocketAddr,
        identity: Option<Arc<SpiffeId>>,
        method: Method,
        uri: &Uri,
        version: Version,
        headers: &HeaderMap,
        trace: Option<SpanContext>,
    ) -> Box<Exchange> {
        let tap_headers = if sinks.tap.is_some() {
            TAP_HEADERS
                .iter()
                .filter_map(|h| Some((*h, headers.get(*h)?.to_str().ok()?.to_string())))
                .collect()
        } else {
            Vec::new()
        };
        let mut x = Exchange::connection(sinks, direction, listener, client, identity);
        x.method = Some(method);
        x.uri = uri.clone();
        x.host = headers.get(http::header::HOST).cloned();
        x.version = version;
        x.request_id = headers.get("x-request-id").cloned();
        x.trace = trace;
        x.trace_id = trace
            .map(|t| t.trace_id)
            .or_else(|| incoming_trace_id(headers));
        x.tap_headers = tap_headers;
        x
    }

    /// The response (or connection) is over: to the tap, the tracer and the
    /// log, each without waiting.
    pub fn finish(mut self: Box<Self>, ended_cleanly: bool) {
        self.ended = Some(self.started.elapsed());
        if !ended_cleanly {
            self.flags |= flags::CLIENT_RESET;
        }
        if self.retries > 0 {
            self.flags |= flags::RETRIED;
        }
        if let Some(tap) = self.sinks.tap.take() {
            tap.publish(&self);
        }
        if let Some(tracer) = self.sinks.tracer.take() {
            tracer.submit(&self);
        }
        if let Some((writer, format)) = self.sinks.log.take() {
            writer.submit(format, self);
        }
    }

    /// `:authority` (HTTP/2) or the Host header (HTTP/1.1).
    pub fn authority(&self) -> &str {
        self.uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| self.host.as_ref().and_then(|h| h.to_str().ok()))
            .unwrap_or("")
    }

    /// The path with its query.
    pub fn path(&self) -> &str {
        self.uri.path_and_query().map_or("", |p| p.as_str())
    }

    fn ms(d: Option<Duration>) -> Option<f64> {
        d.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3)
    }

    pub fn trace_id(&self) -> Option<String> {
        self.trace_id.map(|t| format!("{t:032x}"))
    }

    fn rfc3339(&self) -> String {
        Rfc3339(self.started_at).to_string()
    }

    fn protocol(&self) -> &'static str {
        match self.version {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        }
    }

    /// The JSON line (with its newline), serialized straight into `out`.
    pub fn write_json(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let request_id = self.request_id.as_ref().and_then(|v| v.to_str().ok());
        let ts = Rfc3339(self.started_at);
        let flags = Flags(self.flags);
        let identity = self.identity.as_ref().map(|i| i.as_str());
        match &self.method {
            Some(method) => serde_json::to_writer(
                &mut *out,
                &HttpLine {
                    ts,
                    direction: self.direction.as_str(),
                    listener: &self.listener,
                    route: &self.route,
                    client: self.client,
                    identity,
                    method: method.as_str(),
                    authority: self.authority(),
                    path: self.path(),
                    protocol: self.protocol(),
                    status: self.status,
                    grpc_status: self.grpc_status,
                    flags,
                    request_bytes: self.request_bytes.load(Relaxed),
                    response_bytes: self.response_bytes,
                    duration_ms: Self::ms(self.ended),
                    upstream_ms: Self::ms(self.upstream_head),
                    upstream: self.upstream.as_deref(),
                    request_id,
                    trace_id: self.trace_id.map(Hex128),
                },
            ),
            None => serde_json::to_writer(
                &mut *out,
                &TcpLine {
                    ts,
                    direction: self.direction.as_str(),
                    listener: &self.listener,
                    client: self.client,
                    identity,
                    flags,
                    request_bytes: self.request_bytes.load(Relaxed),
                    response_bytes: self.response_bytes,
                    duration_ms: Self::ms(self.ended),
                    upstream: self.upstream.as_deref(),
                },
            ),
        }
        .map_err(std::io::Error::other)?;
        out.write_all(b"\n")
    }

    pub fn json_line(&self) -> String {
        let mut v = Vec::with_capacity(400);
        let _ = self.write_json(&mut v);
        String::from_utf8(v).unwrap_or_default()
    }

    pub fn text_line(&self) -> String {
        let mut s = String::with_capacity(200);
        let dash = |o: Option<String>| o.unwrap_or_else(|| "-".into());
        let flag_names = flags::names(self.flags);
        let flags = if flag_names.is_empty() {
            "-".to_string()
        } else {
            flag_names.join(",")
        };
        let _ = write!(s, "{} {} ", self.rfc3339(), self.direction.as_str());
        match &self.method {
            Some(m) => {
                let _ = write!(
                    s,
                    "\"{m} {}{} {}\" {} ",
                    self.authority(),
                    self.path(),
                    self.protocol(),
                    self.status
                );
            }
            None => s.push_str("\"TCP\" - "),
        }
        let _ = writeln!(
            s,
            "{flags} {} {} {} {} {} {} {}",
            self.request_bytes.load(Relaxed),
            self.response_bytes,
            Self::ms(self.ended).unwrap_or(0.0),
            dash(self.upstream.clone()),
            self.client,
            dash(
                self.request_id
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .map(String::from)
            ),
            dash(self.trace_id()),
        );
        s
    }

    /// What a tap shows of it.
    pub fn tap_event(&self) -> Value {
        let ts = self
            .started_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let headers: serde_json::Map<String, Value> = self
            .tap_headers
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
            .collect();
        json!({
            "ts": ts,
            "direction": self.direction.as_str(),
            "listener": &*self.listener,
            "route": &*self.route,
            "method": self.method.as_ref().map_or("", |m| m.as_str()),
            "authority": self.authority(),
            "path": self.path(),
            "status": self.status,
            "grpc_status": self.grpc_status,
            "duration_ms": Self::ms(self.ended),
            "source": self.identity.as_ref().map_or("", |i| i.as_str()),
            "client": self.client.to_string(),
            "upstream": self.upstream.clone().unwrap_or_default(),
            "trace_id": self.trace_id().unwrap_or_default(),
            "request_id": self.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
            "flags": flags::names(self.flags),
            "request_headers": headers,
        })
    }
}

/// A moment as RFC 3339 in UTC with milliseconds.
struct Rfc3339(SystemTime);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let since = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days as i64);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
            since.subsec_millis()
        )
    }
}

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Response flags as a list of names, without building one.
struct Flags(u16);

impl serde::Serialize for Flags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(flags::names(self.0))
    }
}

/// A trace id as 32 hex digits.
struct Hex128(u128);

impl serde::Serialize for Hex128 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:032x}", self.0))
    }
}

/// An HTTP access-log line, fields in this order.
#[derive(serde::Serialize)]
struct HttpLine<'a> {
    ts: Rfc3339,
    direction: &'static str,
    listener: &'a str,
    route: &'a str,
    client: SocketAddr,
    identity: Option<&'a str>,
    method: &'a str,
    authority: &'a str,
    path: &'a str,
    protocol: &'static str,
    status: u16,
    grpc_status: Option<u16>,
    flags: Flags,
    request_bytes: u64,
    response_bytes: u64,
    duration_ms: Option<f64>,
    upstream_ms: Option<f64>,
    upstream: Option<&'a str>,
    request_id: Option<&'a str>,
    trace_id: Option<Hex128>,
}

/// A TCP connection's line.
#[derive(serde::Serialize)]
struct TcpLine<'a> {
    ts: Rfc3339,
    direction: &'static str,
    listener: &'a str,
    client: SocketAddr,
    identity: Option<&'a str>,
    flags: Flags,
    request_bytes: u64,
    response_bytes: u64,
    duration_ms: Option<f64>,
    upstream: Option<&'a str>,
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's civil-from-days algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_790), (2026, 12, 3));
    }

    #[test]
    fn lines_carry_the_fields() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("abc"));
        let mut x = Exchange::http(
            Sinks::default(),
            Direction::Outbound,
            "out".into(),
            "127.0.0.1:5000".parse().unwrap(),
            None,
            Method::GET,
            &"http://api/x?y=1".parse().unwrap(),
            Version::HTTP_11,
            &headers,
            None,
        );
        x.status = 503;
        x.flags = flags::UPSTREAM_FAILURE;
        x.ended = Some(Duration::from_micros(1500));
        let v: Value = serde_json::from_str(&x.json_line()).unwrap();
        assert_eq!(v["status"], 503);
        assert_eq!(v["path"], "/x?y=1");
        assert_eq!(v["flags"], json!(["upstream_failure"]));
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["duration_ms"], 1.5);
        let t = x.text_line();
        assert!(t.contains("outbound \"GET api/x?y=1 HTTP/1.1\" 503 upstream_failure 0 0 1.5 - 127.0.0.1:5000 abc -"), "{t}");
    }
}
