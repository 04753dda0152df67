//! One integration binary: every test talks to real sockets and, for the
//! Postgres backend, a real database of its own.

mod harness;

mod acks;
mod admin;
mod admin_invites;
mod audit;
mod cli;
mod clock;
mod cluster;
mod contexts;
mod dashboard;
mod delivery;
mod floods;
mod frames;
mod fuzz_http;
mod handoff;
mod health;
mod hello;
mod hooks;
mod idempotency;
mod isolation;
mod join;
mod loadgen;
mod member_routing;
mod memory;
mod mesh;
mod mesh_outage;
mod message_status;
mod messaging;
mod migrate;
mod moderation;
mod node_death;
mod outage;
mod presence;
mod process;
mod replay;
mod send_extras;
mod sessions;
mod skills;
mod state;
mod store;
mod tasks;
mod vault;
mod vectors;
mod webhooks;
