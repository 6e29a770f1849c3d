//! One integration-test binary (the DataFusion tree is linked once): modules by subject.

mod alerts;
mod ballista;
mod bench;
mod cli;
mod config;
mod delta;
mod generate;
mod hostile;
mod incremental;
mod ingest;
mod lock;
mod marts;
mod models;
mod report;
mod run;
mod s3;
mod serve;
mod support;
