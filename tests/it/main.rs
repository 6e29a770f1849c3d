//! One integration-test binary (the DataFusion tree is linked once): modules by subject.

mod config;
mod generate;
mod ingest;
mod models;
mod run;
mod support;
