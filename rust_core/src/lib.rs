//! The serving engine of a Clipper-compatible prediction server.
//!
//! [`engine::Engine`] owns the ZeroMQ ROUTER that model containers connect to, the per-model
//! queues, adaptive batching and the prediction cache; the `python` feature adds a thin PyO3
//! module over it.

pub mod aimd;
pub mod cache;
pub mod engine;
pub mod http;
mod eventfd;
mod queue;
mod replicas;
pub mod rpc;
pub mod simple_input;
pub mod stats;

#[cfg(feature = "python")]
mod capi;
#[cfg(feature = "python")]
mod python;
