//! End-to-end tests over real HTTP against a real database: SQLite by default,
//! PostgreSQL when `CITYTRUST_TEST_DATABASE_URL` names a server (each test then
//! gets a fresh database of its own). `scripts/test` runs the suite both ways.

// Test code states its expectations with unwrap/expect/panic; the product code may not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod attacks;
mod cli;
mod content;
mod dataspace;
mod federation;
mod governance;
mod harness;
mod interop;
mod ledger;
mod levels;
mod nodes;
mod participation;
mod residents;
mod streams;
mod tidy;
mod web;
mod witness;
