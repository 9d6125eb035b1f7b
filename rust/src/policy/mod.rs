//! Per-request policy run on the data path: authorization, local rate
//! limits, and fault injection (the dice, the delay and the answer are in
//! `fault`). Retries and circuit breaking live with the cluster
//! (`resilience`, `cluster`).

pub mod authz;
pub mod fault;
pub mod ratelimit;
