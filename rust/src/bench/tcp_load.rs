//! One TCP load connection: timed echo round trips, or bulk writes.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::recorder::{ErrorKind, Recorder};
use super::spec::{BenchSpec, Target, TcpMode};
use super::{dial, drive, Exchanged, Exchanger, Pacing, Progress};

pub async fn connection(
    spec: &BenchSpec,
    conn: usize,
    pacing: &Pacing,
    progress: &Progress,
    rec: &mut Recorder,
) {
    let Target::Tcp { addr, mode, size } = &spec.target else {
        return;
    };
    match mode {
        TcpMode::Echo => {
            let echo = EchoExchanger {
                addr,
                timeout: spec.timeout,
                payload: vec![b'x'; *size],
                back: vec![0u8; *size],
            };
            drive(echo, spec, conn, pacing, progress, rec).await;
        }
        TcpMode::Bulk => bulk(spec, addr, *size, pacing, progress, rec).await,
    }
}

struct EchoExchanger<'a> {
    addr: &'a str,
    timeout: Duration,
    payload: Vec<u8>,
    back: Vec<u8>,
}

impl Exchanger for EchoExchanger<'_> {
    type Conn = TcpStream;

    async fn connect(&mut self) -> Result<TcpStream, ErrorKind> {
        dial(self.addr, self.timeout).await
    }

    async fn exchange(&mut self, s: &mut TcpStream) -> Result<Exchanged, ()> {
        s.write_all(&self.payload).await.map_err(|_| ())?;
        s.read_exact(&mut self.back).await.map_err(|_| ())?;
        Ok(Exchanged {
            status: 0,
            bytes: 2 * self.payload.len() as u64,
            reusable: true,
        })
    }
}

/// Writes `size`-byte chunks until the deadline; anything sent back is read and discarded.
async fn bulk(
    spec: &BenchSpec,
    addr: &str,
    size: usize,
    pacing: &Pacing,
    progress: &Progress,
    rec: &mut Recorder,
) {
    let stream = match dial(addr, spec.timeout).await {
        Ok(s) => s,
        Err(kind) => {
            rec.error(kind);
            progress.errors.fetch_add(1, Relaxed);
            return;
        }
    };
    let (mut rd, mut wr) = stream.into_split();
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    let chunk = vec![b'x'; size];
    let deadline = pacing
        .deadline
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(10));
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let started = Instant::now();
        match tokio::time::timeout_at(deadline.into(), wr.write_all(&chunk)).await {
            Ok(Ok(())) => {
                rec.record(started.elapsed(), 0, size as u64);
                progress.completed.fetch_add(1, Relaxed);
                progress.bytes.fetch_add(size as u64, Relaxed);
            }
            Ok(Err(_)) => {
                rec.error(ErrorKind::Io);
                progress.errors.fetch_add(1, Relaxed);
                break;
            }
            Err(_) => break,
        }
    }
    let _ = wr.shutdown().await;
    drain.abort();
}
