//! The serving engine of a Clipper-compatible prediction server.
//!
//! [`engine::Engine`] owns the ZeroMQ ROUTER that model containers connect to, the per-model
//! queues, adaptive batching and the prediction cache; the `python` feature adds a thin PyO3
//! module over it. The modules in layers; each uses only modules listed before it:
//!
//! - `log` (the engine's structured log lines), `epoll` (an epoll set);
//! - codecs of untrusted input: [`rpc`] (Clipper RPC v3 frames, input types), [`simple_input`]
//!   (`{"input": [numbers]}` bodies), [`http`] (the HTTP/1.1 request parser), [`zmtp`] (ZeroMQ's
//!   wire protocol, a DEALER's part of it);
//! - `link` (one ZMTP connection over a non-blocking socket), then [`dealer`]: a ZeroMQ DEALER
//!   connection spoken by the calling thread (the model container's side of the RPC, without
//!   libzmq);
//! - parts of the engine: [`cache`] (prediction cache), [`aimd`] (adaptive batch size), [`stats`]
//!   (sample windows), `queue` (tasks, per-model deadline queues, waiting requests, how they end),
//!   `replicas` (connected containers, batches in flight, liveness), [`router`] (the ROUTER's side
//!   of the RPC: every container connection, on the engine thread), `eventfd` and `timerfd`;
//! - [`engine`]: the loop on its own thread that wires queues and replicas to the router, and the
//!   [`engine::Engine`] handle;
//! - [`capi`]: the C interface of `rust_core/include/clipper_capi.h` (HTTP parser, simple-body
//!   submission), free of Python;
//! - `python` (feature `python`): the PyO3 module `clipper.rust_core`, which completes the C
//!   interface with the one function that needs the engine object.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod aimd;
pub mod cache;
pub mod capi;
pub mod dealer;
pub mod engine;
mod epoll;
mod eventfd;
pub mod http;
mod link;
mod log;
mod queue;
mod replicas;
pub mod router;
pub mod rpc;
pub mod simple_input;
pub mod stats;
mod timerfd;
pub mod zmtp;

#[cfg(feature = "python")]
mod python;
