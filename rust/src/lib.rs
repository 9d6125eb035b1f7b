//! meshctl's data plane: a tokio/hyper proxy driven from Python as
//! `meshctl._core`. Nothing on the request path touches Python.

pub mod balance;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod error;
pub mod filter;
pub mod http;
pub mod io;
pub mod latency;
pub mod listener;
pub mod logging;
pub mod policy;
pub mod route;
pub mod runtime;
pub mod snapshot;
pub mod stats;
pub mod tcp;
pub mod tls;
pub mod worker;

#[cfg(feature = "python")]
mod dataplane;
#[cfg(feature = "python")]
mod python_bench;
#[cfg(feature = "python")]
mod python_util;

pub use config::Config;

pub use engine::Engine;
pub use error::{ConfigIssue, Error};

#[cfg(feature = "python")]
#[pyo3::pymodule]
fn _core(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
    dataplane::register(m)
}
