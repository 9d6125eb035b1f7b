//! meshctl's data plane: a tokio/hyper proxy driven from Python as
//! `meshctl._core`. Nothing on the request path touches Python.
//!
//! Modules are private; the crate's Rust surface is the few types re-exported
//! below. Each area that faces Python registers its own classes and functions
//! (`init_pymodule`), and the module function only calls them in turn.

mod balance;
mod bench;
mod clock;
mod cluster;
mod config;
mod dns;
mod drain;
mod egress;
mod engine;
mod error;
mod explain;
mod filter;
mod http;
mod io;
mod latency;
mod listener;
mod logging;
mod pki;
mod policy;
mod resilience;
mod route;
mod runtime;
mod shared;
mod snapshot;
mod stats;
mod tcp;
mod telemetry;
mod tls;
mod transparent;
mod worker;

#[cfg(feature = "python")]
mod dataplane;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
#[cfg(feature = "python")]
mod python_bench;
#[cfg(feature = "python")]
mod python_explain;
#[cfg(feature = "python")]
mod python_pki;
#[cfg(feature = "python")]
mod python_util;

pub use bench::backend::{BenchBackend, Kind as BackendKind};
pub use bench::{run as run_bench, BenchSpec, Report};
pub use config::{Config, PROXY_OWNED_HEADERS};
pub use engine::Engine;
pub use error::{ConfigIssue, Error};
pub use explain::{explain_authorization, explain_routes, RequestDescription};
pub use logging::init as init_logging;

#[cfg(feature = "python")]
#[pyo3::pymodule]
fn _core(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
    use pyo3::types::PyModuleMethods;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    dataplane::init_pymodule(m)?;
    python_bench::init_pymodule(m)?;
    python_pki::init_pymodule(m)?;
    python_explain::init_pymodule(m)
}
