//! keymart: the nightly batch pipeline behind key-account management.
//!
//! Stages (DESIGN.md): [`ingest`] → [`transform`] → [`audit`] → [`publish`], orchestrated by
//! [`run`]. Imports point down, never across or up:
//!
//! - the binary → [`run`] (orchestration only: one command end to end, the ledger);
//! - [`run`] → the stages ([`ingest`], [`transform`], [`audit`], [`publish`]) and [`generate`];
//!   a stage never imports another stage or [`run`];
//! - the stages → the ground floor, where everything two stages share lives: [`engine`] →
//!   [`warehouse`] (every key in `warehouse::layout`) → [`config`] → [`error`], with [`models`],
//!   [`key_rows`], [`progress`] and [`failpoint`] (a test hook) beside them;
//! - the consumers of the committed marts ([`report`], [`alerts`]) sit beside [`run`] and read
//!   only the ground floor.
//!
//! The `keymart` binary is a thin layer over [`run`] that maps [`error::ErrorKind`] to exit codes.

pub mod alerts;
pub mod audit;
pub mod config;
pub mod engine;
pub mod error;
pub mod failpoint;
pub mod generate;
pub mod ingest;
pub mod key_rows;
pub mod models;
pub mod progress;
pub mod publish;
pub mod report;
pub mod run;
pub mod serve;
pub mod transform;
pub mod warehouse;

pub use error::{Error, ErrorKind, Result};
