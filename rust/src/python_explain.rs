//! The Python face of `explain` and of the checks the control plane borrows
//! from the data plane, so that both halves share one implementation of
//! each decision: route matching, authorization, regular expressions, and
//! the headers the proxy owns.

use pyo3::prelude::*;

use crate::config::{path_regex, PROXY_OWNED_HEADERS};
use crate::dataplane::to_py;
use crate::explain::{explain_authorization, explain_routes, RequestDescription};
use crate::python_util::{from_python, to_python};

/// Which of `matches` (one route's `match` mapping each, in order; None for
/// a route without one) takes the request, and why the ones before it did
/// not: `{"chosen": index | None, "reasons": [...]}`.
#[pyfunction]
#[pyo3(signature = (matches, *, method, path, host = None, headers = None))]
fn match_route(
    py: Python<'_>,
    matches: &Bound<'_, PyAny>,
    method: &str,
    path: &str,
    host: Option<&str>,
    headers: Option<Vec<(String, String)>>,
) -> PyResult<Py<PyAny>> {
    let matches = from_python(matches)?;
    let headers = headers.unwrap_or_default();
    let req = RequestDescription {
        method,
        host,
        path,
        headers: &headers,
    };
    let verdict = explain_routes(&matches, &req).map_err(|e| to_py(py, e))?;
    to_python(py, &verdict)
}

/// What a listener's `authorization` block decides for a caller's SPIFFE ID
/// (None: plaintext) and a request (method and path; both None for TCP).
#[pyfunction]
#[pyo3(signature = (block, *, peer, method = None, path = None))]
fn authorize(
    py: Python<'_>,
    block: &Bound<'_, PyAny>,
    peer: Option<&str>,
    method: Option<&str>,
    path: Option<&str>,
) -> PyResult<Py<PyAny>> {
    let block = from_python(block)?;
    let op = method.zip(path);
    let verdict = explain_authorization(&block, peer, op).map_err(|e| to_py(py, e))?;
    to_python(py, &verdict)
}

/// None when the data plane accepts `pattern` as a whole-path regular
/// expression; else why not, in one line.
#[pyfunction]
fn regex_error(pattern: &str) -> Option<String> {
    path_regex(pattern).err().map(|e| {
        // A syntax error comes as the pattern, a caret line and the reason last.
        let text = e.to_string();
        let last = text.lines().last().unwrap_or_default();
        last.strip_prefix("error: ").unwrap_or(last).to_string()
    })
}

pub fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(match_route, m)?)?;
    m.add_function(wrap_pyfunction!(authorize, m)?)?;
    m.add_function(wrap_pyfunction!(regex_error, m)?)?;
    m.add("PROXY_OWNED_HEADERS", PROXY_OWNED_HEADERS.to_vec())?;
    Ok(())
}
