//! Wire types and pure protocol rules (PROTOCOL.md). No IO here: nothing in
//! this module knows about sockets, HTTP or SQL. A family of frames is one
//! file here (its frames parsed into a typed request, [`wire::Family`]);
//! the engine registers it and handles it.

pub mod clocks;
pub mod contexts;
pub mod cron;
pub mod crypto;
pub mod fields;
pub mod files;
pub mod hello;
pub mod ids;
pub mod invite;
pub mod limits;
pub mod memory;
pub mod mesh;
pub mod message_status;
pub mod messaging;
pub mod moderation;
pub mod presence;
pub mod relay;
pub mod schedules;
pub mod session_hello;
pub mod skills;
pub mod state;
pub mod status;
pub mod streams;
pub mod target;
pub mod tasks;
pub mod types;
pub mod vault;
pub mod vectors;
pub mod webhooks;
pub mod wire;

pub use status::Source;
pub use types::{GroupRef, Profile, Status};

/// Protocol version announced in `hello_ack`.
pub const PROTOCOL_VERSION: u32 = 1;
