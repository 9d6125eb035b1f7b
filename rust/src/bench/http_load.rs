//! One HTTP load connection: HTTP/1.1 or HTTP/2 (prior knowledge), one
//! request at a time, reconnecting after errors.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::h1_client::{serialize, H1Client};
use super::recorder::{ErrorKind, Recorder};
use super::spec::{BenchSpec, Target};
use super::{dial, drive, Exchanged, Exchanger, Pacing, Progress};

enum Sender {
    H1(H1Client),
    H2(http2::SendRequest<Full<Bytes>>),
}

async fn connect(
    spec: &BenchSpec,
    addr: &str,
    http2: bool,
    timeout: Duration,
) -> Result<Sender, ErrorKind> {
    let stream = dial(addr, timeout).await?;
    if http2 {
        let io = TokioIo::new(stream);
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|_| ErrorKind::Connect)?;
        tokio::spawn(conn);
        Ok(Sender::H2(sender))
    } else {
        Ok(Sender::H1(H1Client::new(stream, spec)))
    }
}

async fn read_response(
    resp: Result<http::Response<hyper::body::Incoming>, hyper::Error>,
) -> Result<(u16, u64), hyper::Error> {
    let resp = resp?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame?.data_ref() {
            bytes += d.len() as u64;
        }
    }
    Ok((status, bytes))
}

/// Sends one request and reads the whole answer: (status, body bytes, reusable).
async fn exchange(
    sender: &mut Sender,
    h1_request: &[u8],
    h2_request: impl FnOnce() -> Request<Full<Bytes>>,
) -> Result<(u16, u64, bool), ()> {
    match sender {
        Sender::H1(client) => client.exchange(h1_request).await.map_err(|_| ()),
        Sender::H2(s) => {
            let call = async {
                s.ready().await?;
                read_response(s.send_request(h2_request()).await).await
            };
            call.await
                .map(|(status, n)| (status, n, true))
                .map_err(|_| ())
        }
    }
}

fn request(spec: &BenchSpec, uri: &Uri, host: &str) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(spec.body.clone()));
    *req.method_mut() = spec.method.clone();
    *req.uri_mut() = uri.clone();
    let h = req.headers_mut();
    if let Ok(v) = header::HeaderValue::from_str(host) {
        h.insert(header::HOST, v);
    }
    for (name, value) in &spec.headers {
        h.insert(name.clone(), value.clone());
    }
    req
}

struct HttpExchanger<'a> {
    spec: &'a BenchSpec,
    addr: &'a str,
    http2: bool,
    uri: Uri,
    h1_request: Vec<u8>,
}

impl Exchanger for HttpExchanger<'_> {
    type Conn = Sender;

    async fn connect(&mut self) -> Result<Sender, ErrorKind> {
        connect(self.spec, self.addr, self.http2, self.spec.timeout).await
    }

    async fn exchange(&mut self, sender: &mut Sender) -> Result<Exchanged, ()> {
        let (spec, uri, addr) = (self.spec, &self.uri, self.addr);
        let (status, bytes, reusable) =
            exchange(sender, &self.h1_request, || request(spec, uri, addr)).await?;
        Ok(Exchanged {
            status,
            bytes,
            reusable,
        })
    }
}

pub async fn connection(
    spec: &BenchSpec,
    conn: usize,
    pacing: &Pacing,
    progress: &Progress,
    rec: &mut Recorder,
) {
    let Target::Http { addr, path, http2 } = &spec.target else {
        return;
    };
    // HTTP/2 wants an absolute URI (for :authority); HTTP/1.1 an origin-form one.
    let uri: Uri = if *http2 {
        format!("http://{addr}{path}").parse()
    } else {
        path.parse()
    }
    .unwrap_or_else(|_| Uri::from_static("/"));
    let exchanger = HttpExchanger {
        spec,
        addr,
        http2: *http2,
        uri,
        h1_request: serialize(spec, addr, path),
    };
    drive(exchanger, spec, conn, pacing, progress, rec).await;
}
