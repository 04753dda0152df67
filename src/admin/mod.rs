//! Operating the broker: the admin HTTP API and the CLI that calls it.

pub mod api;
pub mod cli;
