//! One integration binary: every test talks to real sockets and, for the
//! Postgres backend, a real database of its own.

mod harness;

mod admin;
mod admin_invites;
mod cli;
mod delivery;
mod frames;
mod health;
mod hello;
mod hooks;
mod join;
mod messaging;
mod migrate;
mod presence;
mod process;
