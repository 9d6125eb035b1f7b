//! Span export: OTLP/HTTP protobuf (`ExportTraceServiceRequest`), batched,
//! sent by a thread of its own with its own small runtime and HTTP client,
//! so that a slow or absent collector never touches the request path. The
//! queue is bounded: spans past it are dropped and counted.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use rustls::pki_types::ServerName;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

use super::exchange::Exchange;
use super::TelemetryStats;
use crate::config::{Direction, TelemetryConfig, TracingConfig};

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Samples traces and sends this proxy's spans to a collector.
pub struct Tracer {
    /// What it was built from: an update that changes neither keeps it.
    pub spec: (TracingConfig, TelemetryConfig),
    tx: Option<mpsc::Sender<Span>>,
    stats: Arc<TelemetryStats>,
}

impl Tracer {
    /// Reads the token file; starts the exporter thread when there is a collector.
    pub fn new(
        tracing: &TracingConfig,
        me: &TelemetryConfig,
        stats: Arc<TelemetryStats>,
    ) -> Result<Tracer, String> {
        let token = match &tracing.token_file {
            None => None,
            Some(p) => {
                let t = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                Some(t.trim().to_string())
            }
        };
        let tls = match &tracing.ca_file {
            None => None,
            Some(p) => Some(collector_tls(p)?),
        };
        let tx = match &tracing.collector {
            None => None,
            Some(url) => {
                let (tx, rx) = mpsc::channel(tracing.max_queue);
                let exporter = Exporter {
                    url: url.clone(),
                    token,
                    tls,
                    resource: resource(me),
                    batch: tracing.batch_size,
                    flush: tracing.flush,
                    stats: stats.clone(),
                };
                std::thread::Builder::new()
                    .name("meshctl-spans".into())
                    .spawn(move || exporter.run(rx))
                    .map_err(|e| format!("cannot start the span exporter: {e}"))?;
                Some(tx)
            }
        };
        let mut spec_me = me.clone();
        spec_me.tracing = None;
        Ok(Tracer {
            spec: (tracing.clone(), spec_me),
            tx,
            stats,
        })
    }

    pub fn sample_rate(&self) -> f64 {
        self.spec.0.sample_rate
    }

    /// Spans are made (and so worth recording) only when they can be sent.
    pub fn exports(&self) -> bool {
        self.tx.is_some()
    }

    pub fn submit(&self, x: &Exchange) {
        let (Some(tx), Some(span)) = (&self.tx, span(x)) else {
            return;
        };
        if tx.try_send(span).is_err() {
            self.stats.spans_dropped.inc();
        }
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: impl Into<String>) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

fn resource(me: &TelemetryConfig) -> Resource {
    let name = if me.service.is_empty() {
        "meshctl-proxy"
    } else {
        &me.service
    };
    let mut attributes = vec![
        kv("service.name", s(name)),
        kv("meshctl.proxy", any_value::Value::BoolValue(true)),
    ];
    if !me.namespace.is_empty() {
        attributes.push(kv("service.namespace", s(me.namespace.clone())));
    }
    if !me.workload.is_empty() {
        attributes.push(kv("service.instance.id", s(me.workload.clone())));
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

/// The OTLP span of a finished exchange (None without a trace context).
fn span(x: &Exchange) -> Option<Span> {
    let ctx = x.trace?;
    let start = x
        .started_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let end = start + x.ended.unwrap_or_default().as_nanos() as u64;
    let method = x.method.as_ref().map_or("TCP", |m| m.as_str());
    let name = if x.route.is_empty() {
        method.to_string()
    } else {
        format!("{method} {}", x.route)
    };
    let mut attributes = vec![
        kv("http.request.method", s(method)),
        kv("url.path", s(x.uri.path())),
        kv(
            "http.response.status_code",
            any_value::Value::IntValue(i64::from(x.status)),
        ),
        kv("server.address", s(x.authority())),
        kv("meshctl.direction", s(x.direction.as_str())),
        kv("meshctl.route", s(&*x.route)),
        kv("meshctl.destination", s(&*x.destination)),
        kv(
            "meshctl.retries",
            any_value::Value::IntValue(i64::from(x.retries)),
        ),
    ];
    if let Some(up) = &x.upstream {
        attributes.push(kv("meshctl.upstream", s(up.clone())));
    }
    if let Some(id) = &x.identity {
        attributes.push(kv("meshctl.peer_identity", s(id.as_str())));
    }
    let flags = super::flags::names(x.flags);
    if !flags.is_empty() {
        attributes.push(kv("meshctl.flags", s(flags.join(","))));
    }
    if let Some(g) = x.grpc_status {
        attributes.push(kv(
            "rpc.grpc.status_code",
            any_value::Value::IntValue(i64::from(g)),
        ));
    }
    let failed = super::edges::Outcome::http(
        x.status,
        x.grpc_status,
        x.flags & super::flags::CLIENT_RESET == 0,
    )
    .failure;
    Some(Span {
        trace_id: ctx.trace_id.to_be_bytes().to_vec(),
        span_id: ctx.span_id.to_be_bytes().to_vec(),
        parent_span_id: if ctx.parent_id == 0 {
            vec![]
        } else {
            ctx.parent_id.to_be_bytes().to_vec()
        },
        name,
        kind: match x.direction {
            Direction::Outbound => SpanKind::Client,
            Direction::Inbound | Direction::Gateway => SpanKind::Server,
        } as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        status: Some(Status {
            code: if failed {
                status::StatusCode::Error
            } else {
                status::StatusCode::Unset
            } as i32,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// A TLS connector trusting only the roots in `ca_file` (PEM).
fn collector_tls(ca_file: &Path) -> Result<TlsConnector, String> {
    let pem =
        std::fs::read(ca_file).map_err(|e| format!("cannot read {}: {e}", ca_file.display()))?;
    let roots = crate::tls::roots(&pem).map_err(|e| format!("{}: {e}", ca_file.display()))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// An HTTP/1.1 client connection over `io`, driven by a task of its own.
async fn handshake<T>(io: T) -> Result<http1::SendRequest<Full<Bytes>>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(send)
}

struct Exporter {
    url: Uri,
    token: Option<String>,
    /// For an `https://` collector.
    tls: Option<TlsConnector>,
    resource: Resource,
    batch: usize,
    flush: Duration,
    stats: Arc<TelemetryStats>,
}

impl Exporter {
    fn run(self, mut rx: mpsc::Receiver<Span>) {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let mut batch = Vec::with_capacity(self.batch);
            loop {
                let more = match tokio::time::timeout(self.flush, rx.recv()).await {
                    Ok(Some(span)) => {
                        batch.push(span);
                        if batch.len() < self.batch {
                            continue;
                        }
                        true
                    }
                    Ok(None) => false,
                    Err(_) => true,
                };
                if !batch.is_empty() {
                    let spans = std::mem::replace(&mut batch, Vec::with_capacity(self.batch));
                    self.send(spans).await;
                }
                if !more {
                    break;
                }
            }
        });
    }

    async fn send(&self, spans: Vec<Span>) {
        let n = spans.len() as u64;
        let body = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "meshctl".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        match tokio::time::timeout(EXPORT_TIMEOUT, self.post(body)).await {
            Ok(Ok(())) => self.stats.spans_exported.add(n),
            Ok(Err(e)) => {
                self.stats.span_export_failures.add(n);
                tracing::debug!("span export to {} failed: {e}", self.url);
            }
            Err(_) => {
                self.stats.span_export_failures.add(n);
                tracing::debug!("span export to {} timed out", self.url);
            }
        }
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), String> {
        let authority = self.url.authority().ok_or("no host")?.clone();
        let https = self.url.scheme_str() == Some("https");
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let stream = tokio::net::TcpStream::connect((authority.host(), port))
            .await
            .map_err(|e| e.to_string())?;
        let mut send = if https {
            let tls = self
                .tls
                .as_ref()
                .ok_or("an https collector needs ca_file")?;
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
            let stream = tls
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            handshake(stream).await?
        } else {
            handshake(stream).await?
        };
        let path = self
            .url
            .path_and_query()
            .map_or("/v1/traces", |p| p.as_str());
        let mut req = Request::post(path)
            .header(header::HOST, authority.as_str())
            .header(header::CONTENT_TYPE, "application/x-protobuf");
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("collector answered {status}"))
        }
    }
}
