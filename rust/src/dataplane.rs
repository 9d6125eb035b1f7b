//! The Python face of the engine: `DataPlane` and the exceptions. Every call
//! that waits (start, update, stop) releases the GIL while it does.

use std::sync::Arc;
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::config::Config;
use crate::engine::Engine;
use crate::error::Error;
use crate::python_util::{json_text, to_python};
use crate::telemetry::tap::TapFilter;

create_exception!(
    _core,
    ConfigError,
    PyValueError,
    "The config is invalid; `.errors` lists (path, message) pairs."
);
create_exception!(
    _core,
    BindError,
    PyOSError,
    "A listener could not bind its address."
);

/// The one place where the core's errors become Python exceptions.
pub fn to_py(py: Python<'_>, e: Error) -> PyErr {
    match e {
        Error::Config(ref issues) => {
            let err = ConfigError::new_err(e.to_string());
            let pairs: Vec<(String, String)> = issues
                .iter()
                .map(|i| (i.path.clone(), i.message.clone()))
                .collect();
            if let Ok(list) = PyList::new(py, pairs) {
                let _ = err.value(py).setattr("errors", list);
            }
            err
        }
        Error::Bind { .. } => BindError::new_err(e.to_string()),
        Error::State(_) => PyRuntimeError::new_err(e.to_string()),
        Error::Io(_) => PyOSError::new_err(e.to_string()),
    }
}

/// A running proxy: listeners, routes, clusters, all in Rust.
#[pyclass(frozen, module = "meshctl._core")]
pub struct DataPlane {
    engine: Engine,
}

#[pymethods]
impl DataPlane {
    #[new]
    #[pyo3(signature = (config, *, workers = None))]
    fn new(py: Python<'_>, config: &Bound<'_, PyAny>, workers: Option<usize>) -> PyResult<Self> {
        crate::logging::init();
        let text = json_text(config)?;
        let config = py
            .detach(|| Config::parse(&text))
            .map_err(|e| to_py(py, e))?;
        Ok(DataPlane {
            engine: Engine::new(config, workers),
        })
    }

    /// Binds every listener and serves; returns once all are bound.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.engine.start()).map_err(|e| to_py(py, e))
    }

    /// Validates and swaps in a new config; returns its version.
    fn update(&self, py: Python<'_>, config: &Bound<'_, PyAny>) -> PyResult<u64> {
        let text = json_text(config)?;
        py.detach(|| {
            let applied = Config::parse(&text).and_then(|c| self.engine.update(c));
            if let Err(e) = &applied {
                self.engine.rejected(e);
            }
            applied
        })
        .map_err(|e| to_py(py, e))
    }

    /// Stops accepting, drains for up to `grace_seconds`, closes.
    #[pyo3(signature = (grace_seconds = 10.0))]
    fn stop(&self, py: Python<'_>, grace_seconds: f64) -> PyResult<()> {
        if !(grace_seconds.is_finite() && grace_seconds >= 0.0) {
            return Err(PyValueError::new_err(
                "grace_seconds must be a finite number >= 0",
            ));
        }
        py.detach(|| self.engine.stop(Duration::from_secs_f64(grace_seconds)));
        Ok(())
    }

    fn stats(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = py.detach(|| self.engine.stats());
        to_python(py, &v)
    }

    /// The active config with secrets redacted.
    fn config(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_python(py, &self.engine.config())
    }

    /// The active config as it runs: secrets redacted, defaults written out.
    fn effective_config(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_python(py, &self.engine.effective_config())
    }

    /// Bound address per listener name (`admin` included), as "ip:port".
    fn addresses(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_python(py, &self.engine.addresses_json())
    }

    #[getter]
    fn running(&self) -> bool {
        self.engine.is_running()
    }

    /// The edges' cumulative counters (requests, failures, latency buckets,
    /// bytes), for the sidecar's heartbeats.
    fn telemetry(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = py.detach(|| self.engine.shared().telemetry());
        to_python(py, &v)
    }

    /// The admin port's `/metrics` text.
    #[pyo3(signature = (*, openmetrics = false))]
    fn metrics(&self, py: Python<'_>, openmetrics: bool) -> String {
        py.detach(|| self.engine.shared().metrics(openmetrics))
    }

    /// Opens a tap: request metadata matching the filters, as they finish.
    #[pyo3(signature = (*, method = None, path_prefix = None, status = None, authority = None, max_queue = 1000))]
    fn tap(
        &self,
        method: Option<&str>,
        path_prefix: Option<String>,
        status: Option<u16>,
        authority: Option<String>,
        max_queue: usize,
    ) -> PyResult<Tap> {
        let method = method
            .map(|m| http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()))
            .transpose()
            .map_err(|_| PyValueError::new_err("method is not an HTTP method"))?;
        let filter = TapFilter {
            method,
            path_prefix,
            status,
            authority,
        };
        let tap = self.engine.shared().registry.taps.open(filter, max_queue);
        Ok(Tap { inner: tap })
    }

    /// Reopens access-log files before their next line (SIGHUP, for logrotate).
    fn reopen_logs(&self) {
        self.engine.shared().registry.logs.reopen();
    }

    fn __repr__(&self) -> String {
        format!("<DataPlane running={}>", self.engine.is_running())
    }
}

/// A live stream of request metadata; closed by `close()` or when dropped.
#[pyclass(frozen, module = "meshctl._core")]
pub struct Tap {
    inner: Arc<crate::telemetry::tap::Tap>,
}

#[pymethods]
impl Tap {
    /// Up to `max_events` events; waits up to `timeout` seconds for the first.
    #[pyo3(signature = (timeout = 1.0, max_events = 100))]
    fn poll(&self, py: Python<'_>, timeout: f64, max_events: usize) -> PyResult<Py<PyAny>> {
        if !(timeout.is_finite() && timeout >= 0.0) {
            return Err(PyValueError::new_err(
                "timeout must be a finite number >= 0",
            ));
        }
        let events = py.detach(|| {
            self.inner
                .poll(Duration::from_secs_f64(timeout.min(3600.0)), max_events)
        });
        to_python(py, &serde_json::Value::Array(events))
    }

    fn close(&self) {
        self.inner.close();
    }

    #[getter]
    fn dropped(&self) -> u64 {
        self.inner.dropped.get()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.inner.close();
    }
}

/// Checks a config without starting anything; raises ConfigError.
#[pyfunction]
fn validate_config(py: Python<'_>, config: &Bound<'_, PyAny>) -> PyResult<()> {
    let text = json_text(config)?;
    py.detach(|| Config::parse(&text))
        .map(|_| ())
        .map_err(|e| to_py(py, e))
}

pub fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<DataPlane>()?;
    m.add_class::<Tap>()?;
    m.add_function(wrap_pyfunction!(validate_config, m)?)?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("BindError", py.get_type::<BindError>())?;
    Ok(())
}
