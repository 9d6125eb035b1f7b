//! The Python face of the engine: `DataPlane` and the exceptions. Every call
//! that waits (start, update, stop) releases the GIL while it does.

use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::config::Config;
use crate::engine::Engine;
use crate::error::Error;
use crate::python_util::{json_text, to_python};

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
        py.detach(|| Config::parse(&text).and_then(|c| self.engine.update(c)))
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

    /// Bound address per listener name (`admin` included), as "ip:port".
    fn addresses(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_python(py, &self.engine.addresses_json())
    }

    #[getter]
    fn running(&self) -> bool {
        self.engine.is_running()
    }

    fn __repr__(&self) -> String {
        format!("<DataPlane running={}>", self.engine.is_running())
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
    m.add_function(wrap_pyfunction!(validate_config, m)?)?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("BindError", py.get_type::<BindError>())?;
    Ok(())
}
