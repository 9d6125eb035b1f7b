//! Trace context: read from a request's W3C (`traceparent`, `tracestate`)
//! and B3 (multi- and single-header) headers, continued by one span of this
//! hop, and written back in the same formats for the next hop with this
//! span as the parent. The trace id and the sampling decision pass through
//! unchanged; a request that brings none gets a new trace, sampled at the
//! configured rate or when `x-meshctl-trace: 1` forces it.

use std::fmt::Write as _;

use http::{HeaderMap, HeaderName, HeaderValue};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
/// Forces this request's trace to be sampled.
pub const FORCE: HeaderName = HeaderName::from_static("x-meshctl-trace");

const W3C_FORMAT: u8 = 1;
const B3_MULTI_FORMAT: u8 = 2;
const B3_SINGLE_FORMAT: u8 = 4;

/// This hop's span in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: u128,
    pub span_id: u64,
    /// The caller's span; 0 when this hop starts the trace.
    pub parent_id: u64,
    pub sampled: bool,
    /// The formats the request came with (W3C when none).
    formats: u8,
}

/// What the request brought: (trace, parent span, sampled, format).
type Incoming = (u128, u64, Option<bool>, u8);

impl SpanContext {
    /// This hop's span for a request with `headers`.
    pub fn start(headers: &HeaderMap, sample_rate: f64) -> SpanContext {
        // Each header looked up once: this runs for every request of a traced mesh.
        let (tp, b3, b3_trace) = (
            headers.get(&TRACEPARENT),
            headers.get(&B3),
            headers.get(&B3_TRACE),
        );
        let mut formats = 0;
        for (present, format) in [
            (tp.is_some(), W3C_FORMAT),
            (b3.is_some(), B3_SINGLE_FORMAT),
            (b3_trace.is_some(), B3_MULTI_FORMAT),
        ] {
            if present {
                formats |= format;
            }
        }
        let incoming = if formats == 0 {
            None
        } else {
            tp.and_then(w3c)
                .or_else(|| b3.and_then(b3_single))
                .or_else(|| b3_trace.and_then(|t| b3_multi(t, headers)))
        };
        let forced = headers.get(&FORCE).is_some_and(|v| v.as_bytes() == b"1");
        let span_id = nonzero_u64();
        match incoming {
            Some((trace_id, parent_id, sampled, _)) => SpanContext {
                trace_id,
                span_id,
                parent_id,
                sampled: forced || sampled.unwrap_or_else(|| fastrand::f64() < sample_rate),
                formats,
            },
            None => SpanContext {
                trace_id: nonzero_u128(),
                span_id,
                parent_id: 0,
                sampled: forced || (sample_rate > 0.0 && fastrand::f64() < sample_rate),
                formats: if formats == 0 { W3C_FORMAT } else { formats },
            },
        }
    }

    pub fn trace_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// Writes this span as the parent for the next hop, in the formats the
    /// request came with (`tracestate` passes through untouched).
    pub fn inject(&self, headers: &mut HeaderMap) {
        let flag = if self.sampled { "1" } else { "0" };
        if self.formats & W3C_FORMAT != 0 {
            // Every request of a traced mesh carries one: written without format!.
            let mut v = *b"00-00000000000000000000000000000000-0000000000000000-00";
            hex(&mut v[3..35], self.trace_id);
            hex(&mut v[36..52], u128::from(self.span_id));
            v[54] = if self.sampled { b'1' } else { b'0' };
            if let Ok(v) = HeaderValue::from_bytes(&v) {
                headers.insert(TRACEPARENT, v);
            }
        }
        if self.formats & B3_SINGLE_FORMAT != 0 {
            let mut v = format!("{:032x}-{:016x}-{flag}", self.trace_id, self.span_id);
            if self.parent_id != 0 {
                let _ = write!(v, "-{:016x}", self.parent_id);
            }
            insert(headers, B3, v);
        }
        if self.formats & B3_MULTI_FORMAT != 0 {
            insert(headers, B3_TRACE, format!("{:032x}", self.trace_id));
            insert(headers, B3_SPAN, format!("{:016x}", self.span_id));
            insert(headers, B3_SAMPLED, flag.to_string());
            headers.remove(&B3_FLAGS);
            if self.parent_id != 0 {
                insert(headers, B3_PARENT, format!("{:016x}", self.parent_id));
            } else {
                headers.remove(&B3_PARENT);
            }
        }
    }
}

/// The trace a request belongs to, as it came (for access logs when this
/// proxy makes no spans): None without a trace context.
pub fn incoming_trace_id(headers: &HeaderMap) -> Option<u128> {
    headers
        .get(&TRACEPARENT)
        .and_then(w3c)
        .or_else(|| headers.get(&B3_TRACE).and_then(|t| b3_multi(t, headers)))
        .or_else(|| {
            // A bare b3 decision carries no trace.
            headers.get(&B3).filter(|v| v.len() > 1).and_then(b3_single)
        })
        .map(|(trace, ..)| trace)
}

/// Writes the low `out.len()` hex digits of `v` into `out`.
fn hex(out: &mut [u8], mut v: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: String) {
    if let Ok(v) = HeaderValue::try_from(value) {
        headers.insert(name, v);
    }
}

fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

fn nonzero_u128() -> u128 {
    fastrand::u128(1..)
}

fn hex_u128(s: &str) -> Option<u128> {
    // B3 allows 64-bit trace ids: they are the low half of a 128-bit one.
    if (s.len() == 32 || s.len() == 16) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        u128::from_str_radix(s, 16).ok().filter(|v| *v != 0)
    } else {
        None
    }
}

fn hex_u64(s: &str) -> Option<u64> {
    if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        u64::from_str_radix(s, 16).ok().filter(|v| *v != 0)
    } else {
        None
    }
}

fn text<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    headers.get(name).and_then(value)
}

fn value(v: &HeaderValue) -> Option<&str> {
    v.to_str().ok().map(str::trim)
}

/// `traceparent: 00-<trace 32 hex>-<parent 16 hex>-<flags 2 hex>`; an
/// unknown version is read by the same layout (W3C's forward rule).
fn w3c(v: &HeaderValue) -> Option<Incoming> {
    let v = value(v)?;
    let mut parts = v.split('-');
    let version = parts.next()?;
    let (trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version.eq_ignore_ascii_case("ff") || flags.len() != 2 {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace.len() != 32 {
        return None;
    }
    Some((
        hex_u128(trace)?,
        hex_u64(parent)?,
        Some(flags & 1 == 1),
        W3C_FORMAT,
    ))
}

/// `b3: <trace>-<span>[-<sampled>[-<parent>]]`, or just a decision
/// (`0`, `1`, `d`), which then applies to a new trace.
fn b3_single(v: &HeaderValue) -> Option<Incoming> {
    let v = value(v)?;
    let parts: Vec<&str> = v.split('-').collect();
    let decision = |s: &str| match s {
        "1" | "d" => Some(true),
        "0" => Some(false),
        _ => None,
    };
    if parts.len() == 1 {
        // A bare decision: a new trace that keeps it.
        return Some((nonzero_u128(), 0, decision(parts[0]), B3_SINGLE_FORMAT));
    }
    let sampled = parts.get(2).and_then(|s| decision(s));
    Some((
        hex_u128(parts[0])?,
        hex_u64(parts[1])?,
        sampled,
        B3_SINGLE_FORMAT,
    ))
}

fn b3_multi(trace: &HeaderValue, headers: &HeaderMap) -> Option<Incoming> {
    let trace = hex_u128(value(trace)?)?;
    let span = hex_u64(text(headers, &B3_SPAN)?)?;
    let sampled = match (text(headers, &B3_FLAGS), text(headers, &B3_SAMPLED)) {
        (Some("1"), _) => Some(true),
        (_, Some("1" | "true")) => Some(true),
        (_, Some("0" | "false")) => Some(false),
        _ => None,
    };
    Some((trace, span, sampled, B3_MULTI_FORMAT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn w3c_keeps_trace_and_flag_and_sends_a_new_parent() {
        let mut h = headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]);
        let ctx = SpanContext::start(&h, 0.0);
        assert_eq!(ctx.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(ctx.parent_id, 0x00f067aa0ba902b7);
        assert!(ctx.sampled);
        ctx.inject(&mut h);
        let out = h["traceparent"].to_str().unwrap();
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(out.ends_with("-01"));
        assert_ne!(&out[36..52], "00f067aa0ba902b7");
        assert_eq!(&out[36..52], format!("{:016x}", ctx.span_id));
    }

    #[test]
    fn an_unsampled_caller_stays_unsampled_unless_forced() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(!SpanContext::start(&headers(&[("traceparent", tp)]), 1.0).sampled);
        let forced = headers(&[("traceparent", tp), ("x-meshctl-trace", "1")]);
        assert!(SpanContext::start(&forced, 0.0).sampled);
    }

    #[test]
    fn a_new_trace_is_sampled_at_the_rate_and_written_as_w3c() {
        let mut h = HeaderMap::new();
        let ctx = SpanContext::start(&h, 1.0);
        assert!(ctx.sampled && ctx.parent_id == 0);
        assert!(!SpanContext::start(&h, 0.0).sampled);
        ctx.inject(&mut h);
        assert!(h.contains_key("traceparent") && !h.contains_key("b3"));
    }

    #[test]
    fn b3_multi_and_single_round_trip() {
        let mut h = headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ]);
        let ctx = SpanContext::start(&h, 0.0);
        assert_eq!(ctx.trace_id, 0x463ac35c9f6413ad);
        assert_eq!(ctx.parent_id, 0xa2fb4a1d1a96d312);
        assert!(ctx.sampled);
        ctx.inject(&mut h);
        assert_eq!(h["x-b3-parentspanid"], "a2fb4a1d1a96d312");
        assert_eq!(h["x-b3-spanid"], format!("{:016x}", ctx.span_id).as_str());
        assert!(!h.contains_key("traceparent"));

        let mut h = headers(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0-05e3ac9a4f6e3b90",
        )]);
        let ctx = SpanContext::start(&h, 1.0);
        assert_eq!(ctx.parent_id, 0xe457b5a2e4d86bd1);
        assert!(!ctx.sampled);
        ctx.inject(&mut h);
        let v = h["b3"].to_str().unwrap();
        assert!(v.starts_with("80f198ee56343ba864fe8b2a57d3eff7-"));
        assert!(v.ends_with("-0-e457b5a2e4d86bd1"));
    }

    #[test]
    fn malformed_context_starts_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-xyz-00f067aa0ba902b7-01",
        ] {
            let ctx = SpanContext::start(&headers(&[("traceparent", bad)]), 0.0);
            assert_eq!(ctx.parent_id, 0, "{bad}");
        }
    }
}
