//! keymart: the nightly batch pipeline behind key-account management.
//!
//! Stages (DESIGN.md): [`ingest`] → transform → audit → publish, orchestrated by [`run`], on a
//! ground floor of [`config`], [`warehouse`], [`progress`] and [`key_rows`]. The `keymart` binary is a thin
//! layer over [`run`] that maps [`error::ErrorKind`] to exit codes.

pub mod audit;
pub mod config;
pub mod engine;
pub mod error;
pub mod generate;
pub mod ingest;
pub mod key_rows;
pub mod models;
pub mod progress;
pub mod publish;
pub mod run;
pub mod serve;
pub mod transform;
pub mod warehouse;

pub use error::{Error, ErrorKind, Result};
