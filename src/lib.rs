//! claudemesh-broker: a horizontally scalable, wire-compatible claudemesh
//! broker. `app` wires the layers; `main.rs` is only the command line.

pub mod admin;
pub mod app;
pub mod audit;
pub mod blobs;
pub mod cluster;
pub mod config;
pub mod dev;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod pgconn;
pub mod protocol;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod ws;
