//! Per-request policy run on the data path: authorization for now; rate
//! limits, fault injection, retries and circuit breaking come later.

pub mod authz;
