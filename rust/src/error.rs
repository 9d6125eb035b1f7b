//! One error type for the whole core; mapped to Python exceptions only at the
//! boundary (`dataplane.rs`).

use std::fmt;
use std::net::SocketAddr;

/// One problem found in a config document, located by its field path
/// (`listeners[1].routes[0].backends[0].cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

#[derive(Debug)]
pub enum Error {
    /// The config document is invalid; every problem is listed.
    Config(Vec<ConfigIssue>),
    /// A listener could not be bound.
    Bind {
        listener: String,
        address: SocketAddr,
        source: std::io::Error,
    },
    /// The call does not fit the data plane's state (start twice, update after stop).
    State(String),
    /// The runtime could not be built or another I/O failure outside a request.
    Io(std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(issues) => {
                write!(f, "invalid config ({} problem", issues.len())?;
                if issues.len() != 1 {
                    write!(f, "s")?;
                }
                write!(f, ")")?;
                for issue in issues {
                    write!(f, "\n  {issue}")?;
                }
                Ok(())
            }
            Error::Bind {
                listener,
                address,
                source,
            } => write!(f, "listener '{listener}': cannot bind {address}: {source}"),
            Error::State(msg) => write!(f, "{msg}"),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}
