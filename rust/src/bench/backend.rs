//! A fast test backend for benchmarks (`meshctl backend`): HTTP/1.1 and
//! HTTP/2 answering a fixed body, a TCP sink and a TCP echo. Fast enough that
//! in a benchmark the thing measured is the proxy, not the backend.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

use crate::listener;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Http,
    TcpSink,
    TcpEcho,
}

pub struct BenchBackend {
    runtime: Mutex<Option<Runtime>>,
    pub addresses: Vec<(Kind, SocketAddr)>,
}

impl BenchBackend {
    /// Binds every requested address and serves until `stop`.
    pub fn start(
        wanted: &[(Kind, SocketAddr)],
        body: Bytes,
        threads: usize,
    ) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("meshctl-backend")
            .enable_all()
            .build()?;
        let mut addresses = Vec::new();
        let body = Arc::new(body);
        {
            let _enter = runtime.enter();
            for &(kind, addr) in wanted {
                let socket = TcpListener::from_std(listener::bind(addr)?)?;
                addresses.push((kind, socket.local_addr()?));
                let body = body.clone();
                runtime.spawn(async move {
                    loop {
                        let Ok((stream, _)) = socket.accept().await else {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        match kind {
                            Kind::Http => tokio::spawn(serve_http(stream, body.clone())),
                            Kind::TcpSink => tokio::spawn(sink(stream)),
                            Kind::TcpEcho => tokio::spawn(echo(stream)),
                        };
                    }
                });
            }
        }
        Ok(BenchBackend {
            runtime: Mutex::new(Some(runtime)),
            addresses,
        })
    }

    pub fn stop(&self) {
        if let Some(rt) = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            rt.shutdown_background();
        }
    }
}

impl Drop for BenchBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve_http(stream: TcpStream, body: Arc<Bytes>) {
    let service = service_fn(move |_req| {
        let body = (*body).clone();
        async move {
            let mut resp = Response::new(Full::new(body));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain"),
            );
            Ok::<_, Infallible>(resp)
        }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn sink(mut stream: TcpStream) {
    let mut buf = vec![0u8; 256 * 1024];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

async fn echo(stream: TcpStream) {
    let (mut rd, mut wr) = stream.into_split();
    let _ = tokio::io::copy(&mut rd, &mut wr).await;
    let _ = wr.shutdown().await;
}
