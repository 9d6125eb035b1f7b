//! One TCP load connection: timed echo round trips, or bulk writes.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::recorder::{ErrorKind, Recorder};
use super::spec::{BenchSpec, Target, TcpMode};
use super::{Pacing, Progress};

async fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, ErrorKind> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(_)) => Err(ErrorKind::Connect),
        Err(_) => Err(ErrorKind::Timeout),
    }
}

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
        TcpMode::Echo => echo(spec, addr, *size, conn, pacing, progress, rec).await,
        TcpMode::Bulk => bulk(spec, addr, *size, pacing, progress, rec).await,
    }
}

async fn echo(
    spec: &BenchSpec,
    addr: &str,
    size: usize,
    conn: usize,
    pacing: &Pacing,
    progress: &Progress,
    rec: &mut Recorder,
) {
    let payload = vec![b'x'; size];
    let mut back = vec![0u8; size];
    let mut stream: Option<TcpStream> = None;
    let mut k = 0u64;
    loop {
        let intended = pacing.intended(conn, spec.connections, k);
        if let Some(t) = intended {
            if pacing.deadline.is_some_and(|d| t >= d) {
                break;
            }
            tokio::time::sleep_until(t.into()).await;
        }
        if !pacing.next(Instant::now()) {
            break;
        }
        k += 1;
        if stream.is_none() {
            match connect(addr, spec.timeout).await {
                Ok(s) => stream = Some(s),
                Err(kind) => {
                    rec.error(kind);
                    progress.errors.fetch_add(1, Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = stream.as_mut() else { continue };
        let started = intended.unwrap_or_else(Instant::now);
        let round_trip = async {
            s.write_all(&payload).await?;
            s.read_exact(&mut back).await
        };
        match tokio::time::timeout(spec.timeout, round_trip).await {
            Ok(Ok(_)) => {
                rec.record(started.elapsed(), 0, 2 * size as u64);
                progress.completed.fetch_add(1, Relaxed);
                progress.bytes.fetch_add(2 * size as u64, Relaxed);
            }
            Ok(Err(_)) => {
                rec.error(ErrorKind::Io);
                progress.errors.fetch_add(1, Relaxed);
                stream = None;
            }
            Err(_) => {
                rec.error(ErrorKind::Timeout);
                progress.errors.fetch_add(1, Relaxed);
                stream = None;
            }
        }
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
    let stream = match connect(addr, spec.timeout).await {
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
