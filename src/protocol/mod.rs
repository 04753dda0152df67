//! Wire types and pure protocol rules (PROTOCOL.md). No IO here: nothing in
//! this module knows about sockets, HTTP or SQL.

pub mod crypto;
pub mod frames;
pub mod hello;
pub mod invite;
pub mod limits;
pub mod status;
pub mod target;

pub use frames::{GroupRef, Profile, Status};
pub use status::Source;

/// Protocol version announced in `hello_ack`.
pub const PROTOCOL_VERSION: u32 = 1;
