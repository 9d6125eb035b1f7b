//! Telemetry sections: who this proxy is (for metrics labels, spans and
//! access logs), where its spans go, and each listener's direction and
//! access log.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::decode::{Decoder, Fields};

/// Which side of the mesh a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Inbound,
    Outbound,
    Gateway,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Gateway => "gateway",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LogPath {
    Stderr,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub path: LogPath,
    pub format: LogFormat,
}

/// The proxy's own labels, and its span export.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TelemetryConfig {
    pub service: String,
    pub namespace: String,
    pub workload: String,
    pub tracing: Option<TracingConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Share of new traces sampled at the first hop, 0..=1.
    pub sample_rate: f64,
    pub collector: Option<http::Uri>,
    pub token_file: Option<PathBuf>,
    /// PEM roots an `https://` collector's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    pub max_queue: usize,
    pub batch_size: usize,
    pub flush: Duration,
}

// === impl TracingConfig ===

impl TracingConfig {
    /// For `/config`: the defaults written out (the token file's path is no secret).
    pub fn to_json(&self) -> Value {
        json!({
            "sample_percent": self.sample_rate * 100.0,
            "collector": self.collector.as_ref().map(|c| c.to_string()),
            "token_file": self.token_file.as_ref().map(|p| p.display().to_string()),
            "ca_file": self.ca_file.as_ref().map(|p| p.display().to_string()),
            "max_queue": self.max_queue,
            "batch_size": self.batch_size,
            "flush_ms": self.flush.as_millis() as u64,
        })
    }
}

// === impl Decoder (telemetry) ===

impl Decoder {
    pub(super) fn telemetry(&mut self, v: &Value, path: &str) -> Option<TelemetryConfig> {
        let f = self.object(v, path, &["service", "namespace", "workload", "tracing"])?;
        let tracing = f
            .get("tracing")
            .and_then(|t| self.tracing(t, &f.at("tracing")));
        Some(TelemetryConfig {
            service: self.string(&f, "service", false).unwrap_or_default(),
            namespace: self.string(&f, "namespace", false).unwrap_or_default(),
            workload: self.string(&f, "workload", false).unwrap_or_default(),
            tracing,
        })
    }

    fn tracing(&mut self, v: &Value, path: &str) -> Option<TracingConfig> {
        let f = self.object(
            v,
            path,
            &[
                "sample_percent",
                "collector",
                "token_file",
                "ca_file",
                "max_queue",
                "batch_size",
                "flush_ms",
            ],
        )?;
        let collector =
            self.string(&f, "collector", false)
                .and_then(|c| match c.parse::<http::Uri>() {
                    Ok(u)
                        if matches!(u.scheme_str(), Some("http" | "https"))
                            && u.host().is_some() =>
                    {
                        Some(u)
                    }
                    Ok(_) => {
                        self.err(
                            f.at("collector"),
                            format!("'{c}' is not an http:// or https:// URL with a host"),
                        );
                        None
                    }
                    Err(e) => {
                        self.err(f.at("collector"), format!("'{c}' is not a URL: {e}"));
                        None
                    }
                });
        let ca_file = self.string(&f, "ca_file", false).map(PathBuf::from);
        // No system trust store here: an https collector is verified against the roots given.
        if ca_file.is_none()
            && collector
                .as_ref()
                .is_some_and(|c| c.scheme_str() == Some("https"))
        {
            self.err(
                f.at("ca_file"),
                "an https:// collector needs ca_file (the PEM roots its certificate chains to)",
            );
        }
        Some(TracingConfig {
            sample_rate: self.percent(&f, "sample_percent").unwrap_or(0.0) / 100.0,
            collector,
            token_file: self.string(&f, "token_file", false).map(PathBuf::from),
            ca_file,
            max_queue: self.uint(&f, "max_queue", 1, 1_000_000).unwrap_or(2048) as usize,
            batch_size: self.uint(&f, "batch_size", 1, 10_000).unwrap_or(256) as usize,
            flush: self.millis(&f, "flush_ms", 1000),
        })
    }

    /// A listener's `direction`; `mesh_tls` decides the default.
    pub(super) fn direction(&mut self, f: &Fields<'_>, mesh_tls: bool) -> Direction {
        match self.string(f, "direction", false).as_deref() {
            None if mesh_tls => Direction::Inbound,
            None => Direction::Outbound,
            Some("inbound") => Direction::Inbound,
            Some("outbound") => Direction::Outbound,
            Some("gateway") => Direction::Gateway,
            Some(other) => {
                self.err(
                    f.at("direction"),
                    format!("'{other}' is not one of: inbound, outbound, gateway"),
                );
                Direction::Outbound
            }
        }
    }

    pub(super) fn access_log(&mut self, v: &Value, path: &str) -> Option<AccessLogConfig> {
        let f = self.object(v, path, &["path", "format"])?;
        let path = match self.string(&f, "path", true)?.as_str() {
            "-" => LogPath::Stderr,
            p => LogPath::File(PathBuf::from(p)),
        };
        let format = match self.string(&f, "format", false).as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                self.err(
                    f.at("format"),
                    format!("'{other}' is not one of: json, text"),
                );
                LogFormat::Json
            }
        };
        Some(AccessLogConfig { path, format })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;
    use crate::config::Config;

    #[test]
    fn telemetry_sections_decode_with_defaults() {
        let c = Config::parse(
            "telemetry: {service: api, namespace: default, workload: api-1, tracing: {sample_percent: 2.5, collector: 'http://127.0.0.1:4318/v1/traces'}}\n\
             listeners: [{name: web, address: 127.0.0.1:1, routes: [], direction: gateway, access_log: {path: '-'}}]\n",
        )
        .unwrap();
        let t = c.telemetry.tracing.as_ref().unwrap();
        assert_eq!(t.sample_rate, 0.025);
        assert_eq!(t.max_queue, 2048);
        assert_eq!(c.listeners[0].direction.as_str(), "gateway");
        assert_eq!(
            c.listeners[0].access_log.as_ref().unwrap().format,
            super::LogFormat::Json
        );
    }

    #[test]
    fn bad_telemetry_names_the_field() {
        let got = issues(
            "telemetry: {tracing: {sample_percent: 120, collector: 'https://x/v1/traces', extra: 1}}\n\
             listeners: [{name: web, address: 127.0.0.1:1, routes: [], direction: sideways, access_log: {format: xml}}]\n",
        );
        for want in [
            "telemetry.tracing.extra: unknown field",
            "telemetry.tracing.sample_percent: 120 is out of range",
            "telemetry.tracing.ca_file: an https:// collector needs ca_file",
            "listeners[0].direction: 'sideways' is not one of",
            "listeners[0].access_log.path: required",
        ] {
            assert!(has(&got, want), "missing {want:?} in {got:?}");
        }
    }
}
