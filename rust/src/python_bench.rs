//! The Python face of the load generator (`Bench`) and the test backend
//! (`BenchBackend`). The run happens on Rust threads; Python only polls.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::bench::backend::{BenchBackend as Backend, Kind};
use crate::bench::{self, BenchSpec, Progress, Report};
use crate::python_util::{json_text, to_python};

type Run = JoinHandle<std::io::Result<Report>>;

/// One load-generation run: `start()`, poll `progress()`, then `wait()`.
#[pyclass(frozen, module = "meshctl._core")]
pub struct Bench {
    spec: BenchSpec,
    progress: Arc<Progress>,
    cancel: CancellationToken,
    run: Mutex<Option<Run>>,
    report: Mutex<Option<Report>>,
}

#[pymethods]
impl Bench {
    #[new]
    fn new(options: &Bound<'_, PyAny>) -> PyResult<Self> {
        let value: serde_json::Value = serde_json::from_str(&json_text(options)?)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let spec = BenchSpec::from_json(&value).map_err(PyValueError::new_err)?;
        Ok(Bench {
            spec,
            progress: Arc::new(Progress::default()),
            cancel: CancellationToken::new(),
            run: Mutex::new(None),
            report: Mutex::new(None),
        })
    }

    fn start(&self) -> PyResult<()> {
        let mut run = self.run.lock().unwrap_or_else(|e| e.into_inner());
        if run.is_some() || self.progress.snapshot().3 {
            return Err(PyRuntimeError::new_err("this run was already started"));
        }
        let (spec, progress, cancel) = (
            self.spec.clone(),
            self.progress.clone(),
            self.cancel.clone(),
        );
        *run = Some(
            std::thread::Builder::new()
                .name("meshctl-bench".into())
                .spawn(move || bench::run(&spec, progress, cancel))?,
        );
        Ok(())
    }

    /// (completed, errors, bytes, finished) so far.
    fn progress(&self) -> (u64, u64, u64, bool) {
        self.progress.snapshot()
    }

    /// Seconds the run is planned to last (None when bounded by a request count).
    #[getter]
    fn planned_seconds(&self) -> Option<f64> {
        self.spec.duration.map(|d| d.as_secs_f64())
    }

    #[getter]
    fn planned_requests(&self) -> Option<u64> {
        self.spec.requests
    }

    fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Waits up to `timeout` seconds (forever when None); the report, or None if still running.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        let finished = py.detach(|| loop {
            let done = self
                .run
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_none_or(|h| h.is_finished());
            if done {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        });
        if !finished {
            return Ok(None);
        }
        let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
        if report.is_none() {
            let Some(handle) = self.run.lock().unwrap_or_else(|e| e.into_inner()).take() else {
                return Err(PyRuntimeError::new_err("the run was not started"));
            };
            let result = handle
                .join()
                .map_err(|_| PyRuntimeError::new_err("the benchmark thread panicked"))?;
            *report = Some(result?);
        }
        report.as_ref().map(|r| to_python(py, r)).transpose()
    }
}

/// A fast backend for benchmarks: fixed HTTP answers, a TCP sink, a TCP echo.
#[pyclass(frozen, module = "meshctl._core")]
pub struct BenchBackend {
    inner: Backend,
}

fn parse_addr(what: &str, a: Option<String>) -> PyResult<Option<SocketAddr>> {
    a.map(|s| {
        s.parse()
            .map_err(|_| PyValueError::new_err(format!("{what}: '{s}' is not an IP:port address")))
    })
    .transpose()
}

#[pymethods]
impl BenchBackend {
    #[new]
    #[pyo3(signature = (*, http = None, tcp_sink = None, tcp_echo = None, body = None, threads = 1))]
    fn new(
        py: Python<'_>,
        http: Option<String>,
        tcp_sink: Option<String>,
        tcp_echo: Option<String>,
        body: Option<String>,
        threads: usize,
    ) -> PyResult<Self> {
        let wanted: Vec<(Kind, SocketAddr)> = [
            (Kind::Http, parse_addr("http", http)?),
            (Kind::TcpSink, parse_addr("tcp_sink", tcp_sink)?),
            (Kind::TcpEcho, parse_addr("tcp_echo", tcp_echo)?),
        ]
        .into_iter()
        .filter_map(|(k, a)| a.map(|a| (k, a)))
        .collect();
        if wanted.is_empty() {
            return Err(PyValueError::new_err(
                "give at least one of http, tcp_sink, tcp_echo",
            ));
        }
        let inner = py.detach(|| {
            Backend::start(
                &wanted,
                Bytes::from(body.unwrap_or_else(|| "ok\n".into())),
                threads,
            )
        })?;
        Ok(BenchBackend { inner })
    }

    /// Bound address by kind: "http", "tcp_sink", "tcp_echo".
    #[getter]
    fn addresses(&self) -> std::collections::HashMap<&'static str, String> {
        self.inner
            .addresses
            .iter()
            .map(|(k, a)| {
                let name = match k {
                    Kind::Http => "http",
                    Kind::TcpSink => "tcp_sink",
                    Kind::TcpEcho => "tcp_echo",
                };
                (name, a.to_string())
            })
            .collect()
    }

    fn stop(&self, py: Python<'_>) {
        py.detach(|| self.inner.stop());
    }
}

pub fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Bench>()?;
    m.add_class::<BenchBackend>()?;
    Ok(())
}
