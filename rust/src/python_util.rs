//! Conversions at the Python boundary shared by the classes.

use pyo3::prelude::*;
use pyo3::types::PyString;

/// YAML/JSON text as is; anything else (a dict) goes through `json.dumps`.
pub fn json_text(value: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(s.to_str()?.to_owned());
    }
    let json = value.py().import("json")?;
    json.call_method1("dumps", (value,))?.extract()
}

pub fn to_python(py: Python<'_>, v: &serde_json::Value) -> PyResult<Py<PyAny>> {
    let json = py.import("json")?;
    Ok(json.call_method1("loads", (v.to_string(),))?.unbind())
}

/// A Python value (a dict, or YAML/JSON text) as a JSON document.
pub fn from_python(value: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    let text = json_text(value)?;
    yaml_serde::from_str(&text).map_err(|e| {
        pyo3::exceptions::PyValueError::new_err(format!("not a YAML/JSON document: {e}"))
    })
}
