//! One integration-test binary (the DataFusion tree is linked once): modules by subject.

mod ballista;
mod bench;
mod config;
mod generate;
mod incremental;
mod ingest;
mod marts;
mod models;
mod run;
mod s3;
mod serve;
mod support;
