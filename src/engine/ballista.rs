//! The same SQL on an Apache DataFusion Ballista cluster: the client session a run uses with
//! `engine: ballista://HOST:PORT`, and the scheduler and executor that `keymart ballista …`
//! starts. All three carry keymart's functions and session options, so a model plans the same
//! on the client, the scheduler and the executors.
//!
//! The executors read the warehouse's Parquet themselves (object stores are opened from the URL
//! and the environment's credentials, as keymart's own are); the rows of a model's result stream
//! back to the keymart process, which writes the files and keeps the commit protocol, the lock
//! and the ledger.

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ballista::prelude::SessionContextExt;
use ballista_core::extension::{
    SessionConfigExt, ballista_aggregate_functions, ballista_scalar_functions, ballista_window_functions,
};
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use object_store::ObjectStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

use super::{Engine, SchedulerUrl, engine_error, register_functions, session_parts, with_keymart_options};
use crate::error::{Error, Result};
use crate::warehouse::{Location, StorageSettings};

impl Engine {
    /// A session whose queries run on the Ballista cluster behind `scheduler`, once it has a
    /// live executor (waiting up to `executor_wait` for one).
    pub async fn ballista(
        scheduler: &SchedulerUrl,
        location: &Location,
        memory_limit_bytes: usize,
        executor_wait: Duration,
    ) -> Result<Engine> {
        reachable(scheduler).await?;
        let cluster = ClusterWatch { scheduler: scheduler.clone(), wait: executor_wait };
        cluster.ready().await?;
        let (config, runtime) = session_parts(memory_limit_bytes)?;
        let state = SessionStateBuilder::new()
            .with_config(ballista_options(with_keymart_options(config.upgrade_for_ballista())))
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        let ctx = SessionContext::remote_with_state(&format!("df://{}:{}", scheduler.host, scheduler.port), state)
            .await
            .map_err(|e| engine_error(format!("connecting to {scheduler}"), e))?;
        ctx.register_object_store(&location.store_url, location.store.clone());
        // Ballista's session replaces the function lists with its own; keymart's go back in.
        register_functions(&ctx);
        Ok(Engine { ctx, name: scheduler.to_string(), cluster: Some(cluster) })
    }
}

/// A Ballista job waits, without a word, for as long as the cluster has no live executor (the
/// scheduler only logs "no alive executors"). keymart asks the scheduler's readiness probe
/// (`GET /readyz`: 200 with at least one live executor, else 503 "not ready: 0/1 executors
/// registered") before each model and every second while one runs, and fails with
/// [`Error::TimedOut`] once the cluster has had no live executor for `wait`.
#[derive(Debug, Clone)]
pub struct ClusterWatch {
    scheduler: SchedulerUrl,
    wait: Duration,
}

/// How often a running model's cluster is asked whether it still has an executor.
const PROBE_INTERVAL: Duration = Duration::from_millis(1000);

impl ClusterWatch {
    /// Wait until the cluster has a live executor, at most `wait`.
    pub async fn ready(&self) -> Result<()> {
        let started = tokio::time::Instant::now();
        loop {
            let answer = self.probe().await;
            match answer {
                Ok(()) => return Ok(()),
                Err(said) if started.elapsed() >= self.wait => return Err(self.no_executor(&said)),
                Err(_) => tokio::time::sleep(PROBE_INTERVAL / 4).await,
            }
        }
    }

    /// Resolves once the cluster has had no live executor for `wait` (never while it has one).
    async fn lost(&self) -> Error {
        let mut last_ready = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            match self.probe().await {
                Ok(()) => last_ready = tokio::time::Instant::now(),
                Err(said) if last_ready.elapsed() >= self.wait => return self.no_executor(&said),
                Err(_) => {}
            }
        }
    }

    /// `stream`, failing with [`Error::TimedOut`] if the cluster loses its last executor for
    /// `wait` while the stream is read.
    pub fn watched(&self, stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
        let schema = stream.schema();
        let lost: Pin<Box<dyn Future<Output = Error> + Send>> = Box::pin({
            let watch = self.clone();
            async move { watch.lost().await }
        });
        let batches = futures::stream::unfold(Some((stream, lost)), |state| async move {
            let (mut stream, mut lost) = state?;
            tokio::select! {
                batch = stream.next() => batch.map(|batch| (batch, Some((stream, lost)))),
                e = &mut lost => Some((Err(DataFusionError::External(Box::new(e))), None)),
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, batches))
    }

    fn no_executor(&self, said: &str) -> Error {
        Error::TimedOut(format!(
            "the Ballista cluster at {} has had no live executor for {} s (ballista_wait_seconds): {said}; \
             start an executor (`keymart ballista executor --scheduler-host … --scheduler-port {}`) and run again",
            self.scheduler,
            self.wait.as_secs(),
            self.scheduler.port
        ))
    }

    /// Ok when the scheduler says it has a live executor; else what it said, in one line.
    async fn probe(&self) -> std::result::Result<(), String> {
        let address = format!("{}:{}", self.scheduler.host, self.scheduler.port);
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(&address).await?;
            let request =
                format!("GET /readyz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nUser-Agent: keymart\r\n\r\n");
            stream.write_all(request.as_bytes()).await?;
            let mut response = Vec::new();
            stream.take(64 * 1024).read_to_end(&mut response).await?;
            std::io::Result::Ok(String::from_utf8_lossy(&response).into_owned())
        };
        let response = match tokio::time::timeout(PROBE_INTERVAL * 5, exchange).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Err(format!("the scheduler's readiness probe failed: {e}")),
            Err(_) => return Err("the scheduler did not answer its readiness probe in 5 s".into()),
        };
        let status = response.lines().next().unwrap_or_default();
        if status.split_whitespace().nth(1) == Some("200") {
            return Ok(());
        }
        let body = response.split("\r\n\r\n").nth(1).unwrap_or(status).trim();
        Err(format!("the scheduler says `{}`", body.lines().next().unwrap_or(status)))
    }
}

/// Fail early, and in one line, when nothing listens at the scheduler's address (Ballista itself
/// would only fail at the first query, with a gRPC transport error).
async fn reachable(scheduler: &SchedulerUrl) -> Result<()> {
    let unreachable =
        |detail: String| Error::Usage(format!("cannot reach the Ballista scheduler at {scheduler}: {detail}"));
    let address = format!("{}:{}", scheduler.host, scheduler.port);
    let connect = tokio::net::TcpStream::connect(&address);
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable("no answer in 10 s".into())),
    }
}

/// A session state with keymart's options and functions besides Ballista's: what the scheduler
/// plans with and the executors run with.
fn cluster_state(config: SessionConfig) -> datafusion::error::Result<SessionState> {
    let mut scalars = ballista_scalar_functions();
    scalars.extend(super::scalar_functions().into_iter().map(Arc::new));
    let mut aggregates = ballista_aggregate_functions();
    aggregates.extend(super::aggregate_functions().into_iter().map(Arc::new));
    Ok(SessionStateBuilder::new()
        .with_config(config.clone())
        .with_runtime_env(cluster_runtime(&config)?)
        .with_default_features()
        .with_optimizer_rules(ballista_core::optimizer::ballista_default_optimizer_rules())
        .with_scalar_functions(scalars)
        .with_aggregate_functions(aggregates)
        .with_window_functions(ballista_window_functions())
        .build())
}

fn cluster_config() -> SessionConfig {
    ballista_options(with_keymart_options(SessionConfig::new_with_ballista()))
}

/// Settings that keep Ballista 55 on plans it runs correctly (each found with the sample):
/// - its adaptive planner re-plans a stage forever when a join side turns out empty (the first
///   night's history tables): off, so jobs run the plan the scheduler made;
/// - without it, hash joins lose rows (a LEFT JOIN of two 199-row tables returned 101): sort-merge
///   joins, Ballista's own default, stay;
/// - statistics let the planner answer `max(as_of)` over an empty history from metadata, and the
///   stage built around that constant reports mismatched metrics and never finishes: not
///   collected.
///
/// The client's settings travel with each job; the cluster's defaults say the same.
fn ballista_options(config: SessionConfig) -> SessionConfig {
    config
        .with_ballista_adaptive_query_planner(false)
        .set_bool("datafusion.optimizer.prefer_hash_join", false)
        .set_bool("datafusion.execution.collect_statistics", false)
}

fn cluster_runtime(_config: &SessionConfig) -> datafusion::error::Result<Arc<RuntimeEnv>> {
    RuntimeEnvBuilder::new().with_object_store_registry(Arc::new(StoresByUrl::default())).build_arc()
}

/// Object stores opened on first use from the URL alone, credentials and endpoint from the
/// environment (AWS_*, GOOGLE_*, AZURE_*): the scheduler and executors have no keymart.yaml.
/// An opened store is registered, so it is opened once per bucket.
#[derive(Debug, Default)]
struct StoresByUrl {
    registered: DefaultObjectStoreRegistry,
}

impl ObjectStoreRegistry for StoresByUrl {
    fn register_store(&self, url: &Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        self.registered.register_store(url, store)
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.registered.get_store(url) {
            return Ok(store);
        }
        let (store, _) = crate::warehouse::store::open(url, &StorageSettings::default())
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        self.registered.register_store(url, store.clone());
        Ok(store)
    }
}

/// `keymart ballista scheduler` (the flags mirror Ballista's own scheduler binary).
#[derive(Debug, clap::Args)]
pub struct SchedulerOptions {
    #[arg(long, default_value = "127.0.0.1", value_name = "HOST")]
    pub bind_host: String,
    #[arg(long, default_value_t = 50050, value_name = "PORT")]
    pub bind_port: u16,
    /// Seconds without a heartbeat before an executor is taken for dead and its tasks rerun elsewhere.
    #[arg(long, default_value_t = 180, value_name = "SECONDS")]
    pub executor_timeout_seconds: u64,
}

/// Run a Ballista scheduler with keymart's functions until the process is stopped.
pub async fn run_scheduler(options: SchedulerOptions) -> Result<()> {
    let address = socket_address(&options.bind_host, options.bind_port)?;
    let mut config = SchedulerConfig {
        bind_host: options.bind_host.clone(),
        bind_port: options.bind_port,
        external_host: options.bind_host.clone(),
        executor_timeout_seconds: options.executor_timeout_seconds,
        no_executors_grace_period_seconds: options.executor_timeout_seconds,
        expire_dead_executor_interval_seconds: (options.executor_timeout_seconds / 2).clamp(1, 15),
        ..SchedulerConfig::default()
    };
    config.override_session_builder = Some(Arc::new(cluster_state));
    config.override_config_producer = Some(Arc::new(cluster_config));
    let config = Arc::new(config);
    let cluster =
        BallistaCluster::new_from_config(&config).await.map_err(|e| cluster_error("starting the scheduler", e))?;
    tracing::info!("Ballista scheduler with keymart's functions listening on {address}");
    start_server(cluster, address, config).await.map_err(|e| cluster_error(format!("scheduler on {address}"), e))
}

/// `keymart ballista executor` (the flags mirror Ballista's own executor binary).
#[derive(Debug, clap::Args)]
pub struct ExecutorOptions {
    #[arg(long, default_value = "127.0.0.1", value_name = "HOST")]
    pub scheduler_host: String,
    #[arg(long, default_value_t = 50050, value_name = "PORT")]
    pub scheduler_port: u16,
    /// Address the executor listens on.
    #[arg(long, default_value = "127.0.0.1", value_name = "HOST")]
    pub bind_host: String,
    /// Address the others reach it at (default: --bind-host).
    #[arg(long, value_name = "HOST")]
    pub external_host: Option<String>,
    /// Arrow Flight port (shuffle reads and results).
    #[arg(long, default_value_t = 50051, value_name = "PORT")]
    pub bind_port: u16,
    /// gRPC port the scheduler pushes tasks to.
    #[arg(long, default_value_t = 50052, value_name = "PORT")]
    pub bind_grpc_port: u16,
    /// Tasks run at once (default: number of cores).
    #[arg(long, value_name = "N")]
    pub concurrent_tasks: Option<usize>,
    /// Folder for shuffle files (default: a temporary folder).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<String>,
    /// Seconds between heartbeats to the scheduler (keep below its --executor-timeout-seconds).
    #[arg(long = "executor-heartbeat-interval-seconds", default_value_t = 60, value_name = "SECONDS")]
    pub heartbeat_interval_seconds: u64,
}

/// Run a Ballista executor with keymart's functions until the process is stopped.
pub async fn run_executor(options: ExecutorOptions) -> Result<()> {
    let state = cluster_state(cluster_config()).map_err(|e| engine_error("starting the executor", e))?;
    let cores = || std::thread::available_parallelism().map_or(2, |n| n.get());
    let config = ExecutorProcessConfig {
        bind_host: options.bind_host.clone(),
        external_host: Some(options.external_host.clone().unwrap_or_else(|| options.bind_host.clone())),
        port: options.bind_port,
        grpc_port: options.bind_grpc_port,
        scheduler_host: options.scheduler_host.clone(),
        scheduler_port: options.scheduler_port,
        vcores: options.concurrent_tasks.unwrap_or_else(cores).max(1),
        work_dir: options.work_dir,
        executor_heartbeat_interval_seconds: options.heartbeat_interval_seconds.max(1),
        override_function_registry: Some(Arc::new(BallistaFunctionRegistry::from(&state))),
        override_runtime_producer: Some(Arc::new(cluster_runtime)),
        override_config_producer: Some(Arc::new(cluster_config)),
        ..ExecutorProcessConfig::default()
    };
    tracing::info!(
        "Ballista executor with keymart's functions on {}:{} (flight) / {} (grpc), scheduler {}:{}",
        options.bind_host,
        options.bind_port,
        options.bind_grpc_port,
        options.scheduler_host,
        options.scheduler_port
    );
    start_executor_process(Arc::new(config)).await.map_err(|e| cluster_error("executor", e))
}

fn socket_address(host: &str, port: u16) -> Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| Error::Usage(format!("cannot bind to {host}:{port}: not an address of this host")))
}

fn cluster_error(context: impl Into<String>, e: ballista_core::error::BallistaError) -> Error {
    Error::Usage(format!("{}: {e}", context.into()))
}
