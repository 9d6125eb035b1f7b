//! The Python face of `pki::request`: a sidecar's key and CSR, and what it
//! reads of the certificate it gets back, without `cryptography` loaded.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::pki::request;

/// A new EC P-256 private key (PKCS#8 PEM) and a CSR (PEM) whose only name
/// is the URI SAN `spiffe_id`.
#[pyfunction]
fn key_and_csr(spiffe_id: &str) -> PyResult<(String, String)> {
    let made = request::key_and_request(spiffe_id).map_err(PyValueError::new_err)?;
    Ok((made.key_pem, made.csr_pem))
}

/// The first certificate of a PEM chain: (its SPIFFE ID or None, not
/// before, not after, serial number in hex), the times as Unix seconds.
/// ValueError when there is no readable certificate.
#[pyfunction]
fn leaf_certificate(chain_pem: &str) -> PyResult<(Option<String>, i64, i64, String)> {
    let leaf = request::leaf(chain_pem).map_err(PyValueError::new_err)?;
    Ok((leaf.spiffe_id, leaf.not_before, leaf.not_after, leaf.serial))
}

/// The DER of every certificate in a PEM text; ValueError when there is
/// none or one is unreadable.
#[pyfunction]
fn certificates_der<'py>(py: Python<'py>, pem: &str) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    let certs = request::certificates_der(pem).map_err(PyValueError::new_err)?;
    Ok(certs.iter().map(|c| PyBytes::new(py, c)).collect())
}

/// A DER certificate's SubjectPublicKeyInfo (DER).
#[pyfunction]
fn public_key_info<'py>(py: Python<'py>, der: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let spki = request::public_key_info(der).map_err(PyValueError::new_err)?;
    Ok(PyBytes::new(py, &spki))
}

pub fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(key_and_csr, m)?)?;
    m.add_function(wrap_pyfunction!(leaf_certificate, m)?)?;
    m.add_function(wrap_pyfunction!(certificates_der, m)?)?;
    m.add_function(wrap_pyfunction!(public_key_info, m)?)
}
