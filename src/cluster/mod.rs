//! What makes nodes one cluster beyond the shared tables: the NOTIFY bus
//! (`bus`), the one place outside the store that talks to Postgres. It
//! implements the engine's [`Bus`](crate::engine::signal::Bus) and hands
//! what it receives to the engine's session table.

pub mod bus;
