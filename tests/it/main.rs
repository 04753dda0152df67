//! One integration binary: every test talks to real sockets and, for the
//! Postgres backend, a real database of its own.

mod harness;

mod admin;
mod cli;
mod frames;
mod health;
mod hello;
mod join;
mod migrate;
mod presence;
mod process;
