//! The `keymart` command: parse arguments, call the library, print, map errors to exit codes.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::NaiveDate;
use clap::{Parser, Subcommand, ValueEnum};
use keymart::config::ReportLang;
use keymart::engine::ballista;
use keymart::error::secrets::scrub;
use keymart::generate::GenerateOptions;
use keymart::generate::population::{BgNbdParams, GammaGammaParams};
use keymart::ingest::read::xlsx::legacy;
use keymart::progress::Progress;
use keymart::report;
use keymart::run::query::OutputFormat;
use keymart::run::{self, IngestRequest, Overrides, RunRequest, Session};
use keymart::serve::ServeOptions;
use keymart::{Error, ErrorKind};

/// Exit codes (documented in the README).
const EXIT_RUN_FAILED: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_INPUT_REJECTED: u8 = 3;
const EXIT_LOCKED: u8 = 4;
const EXIT_TESTS_FAILED: u8 = 5;
const EXIT_STORAGE: u8 = 6;
const EXIT_LOCK_LOST: u8 = 7;
const EXIT_TIMED_OUT: u8 = 8;

#[derive(Parser)]
#[command(name = "keymart", version, about = "Nightly ERP/SCM/call-centre extracts → key-account marts")]
struct Cli {
    /// Project directory (holds keymart.yaml and pipelines/).
    #[arg(long, global = true, default_value = ".", value_name = "DIR")]
    project: PathBuf,
    /// Warehouse root (path or URL); overrides keymart.yaml.
    #[arg(long, global = true, env = "KEYMART_WAREHOUSE", value_name = "URL")]
    warehouse: Option<String>,
    /// Landing root (path or URL); default: keymart.yaml, else <warehouse>/landing.
    #[arg(long, global = true, env = "KEYMART_LANDING", value_name = "URL")]
    landing: Option<String>,
    /// Where the models run: `local` or `ballista://HOST:PORT`; overrides keymart.yaml.
    #[arg(long, global = true, env = "KEYMART_ENGINE", value_name = "ENGINE")]
    engine: Option<String>,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// The nightly run: lock, ingest, models, data tests, publish, ledger — for one date or a range.
    Run(RunArgs),
    /// Validate keymart.yaml, every pipeline and every model's SQL; list every problem.
    Check,
    /// Print the model graph.
    Dag {
        #[arg(long, value_name = "NAME")]
        pipeline: Option<String>,
        #[arg(long, value_enum, default_value_t = DagFormat::Text)]
        format: DagFormat,
    },
    /// Read-only SQL over the committed marts (latest snapshot, or the one at --as-of) and Parquet files by path.
    Query {
        sql: String,
        #[arg(long, value_name = "DATE")]
        as_of: Option<NaiveDate>,
        #[arg(long, value_name = "NAME")]
        pipeline: Option<String>,
        #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
        format: QueryFormat,
        /// Cancel the query if it still runs after this many seconds (exit 8).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<f64>,
    },
    /// List recent runs from the ledger.
    Runs {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Remove the warehouse run lock (after a crashed run; says whose it was).
    Unlock,
    /// Turn marts committed with `_SUCCESS` manifests (keymart before Delta Lake) into Delta tables.
    Migrate,
    /// Load the landing extracts of one date into raw/ (bad rows to rejects/).
    Ingest {
        /// The extract date to load (YYYY-MM-DD).
        #[arg(long, value_name = "DATE")]
        as_of: NaiveDate,
        /// Only this source (repeatable).
        #[arg(long = "source", value_name = "NAME")]
        sources: Vec<String>,
        #[arg(long, value_name = "NAME")]
        pipeline: Option<String>,
        /// Threads that type records, and sources loaded at once (default: number of cores).
        #[arg(long, value_name = "N")]
        workers: Option<usize>,
    },
    /// Write the night's HTML report of the committed marts (default: into the warehouse's reports/).
    Report {
        /// The night to report (default: the newest committed).
        #[arg(long, value_name = "DATE")]
        as_of: Option<NaiveDate>,
        /// Language of labels and numbers (default: `report.lang` in keymart.yaml, else zh).
        #[arg(long, value_enum)]
        lang: Option<ReportLangArg>,
        /// Write this file instead of reports/as_of=D/index.html (and reports/latest.html) in the warehouse.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Send a committed night's key-account alerts to the targets of keymart.yaml's `alerts:`.
    Alerts {
        /// The night whose alerts to send.
        #[arg(long, value_name = "DATE")]
        as_of: NaiveDate,
        /// Send to targets that had this night's alerts already.
        #[arg(long)]
        resend: bool,
    },
    /// Write synthetic extracts for all four sources in the landing layout (deterministic per seed).
    Generate(GenerateArgs),
    /// Serve the committed marts over the PostgreSQL protocol and Arrow Flight SQL (read-only); health, metrics
    /// and reports over HTTP.
    Serve {
        /// PostgreSQL listener (default: keymart.yaml's serve.listen, else 127.0.0.1:5433).
        #[arg(long, value_name = "ADDR")]
        pg: Option<String>,
        /// HTTP listener: /healthz, /metrics, the reports (default: serve.http_listen, else 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
        /// Arrow Flight SQL listener for ADBC clients; beyond loopback only with serve.tls and users (default:
        /// serve.flight_listen, else off).
        #[arg(long, value_name = "ADDR")]
        flight: Option<String>,
    },
    /// Start a Ballista scheduler or executor that knows keymart's SQL functions.
    #[command(subcommand)]
    Ballista(BallistaCommand),
}

#[derive(Subcommand)]
enum BallistaCommand {
    /// A scheduler: runs `keymart run --engine ballista://HOST:PORT` jobs on its executors.
    Scheduler(ballista::SchedulerOptions),
    /// An executor: runs the scheduler's tasks (reading the warehouse itself) and serves their results.
    Executor(ballista::ExecutorOptions),
}

#[derive(Clone, Copy, ValueEnum)]
enum DagFormat {
    Text,
    Dot,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportLangArg {
    Zh,
    En,
}

#[derive(Clone, Copy, ValueEnum)]
enum QueryFormat {
    Table,
    Csv,
    Json,
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long, value_name = "NAME")]
    pipeline: Option<String>,
    /// The logical date to build (default: yesterday).
    #[arg(long, value_name = "DATE", conflicts_with_all = ["from", "to", "retry"])]
    as_of: Option<NaiveDate>,
    /// First date of a backfill (with --to); dates run in order.
    #[arg(long, value_name = "DATE", requires = "to", conflicts_with = "retry")]
    from: Option<NaiveDate>,
    #[arg(long, value_name = "DATE", requires = "from")]
    to: Option<NaiveDate>,
    /// Only these models (`name`, or `name+` with everything downstream); repeatable.
    #[arg(long, value_name = "MODEL")]
    select: Vec<String>,
    /// Recompute dates already committed from the same inputs.
    #[arg(long)]
    rebuild: bool,
    /// Start MART's Delta table anew from the first date's snapshot: its earlier snapshots leave
    /// the table (the way out of a column that changed type or was removed); repeatable.
    #[arg(long, value_name = "MART")]
    rebuild_table: Vec<String>,
    /// Compute incremental models from all history instead of from their previous state.
    #[arg(long)]
    full: bool,
    /// Replay an earlier run (its dates, selection and pipeline): a run id, or `last`.
    #[arg(long, value_name = "RUN_ID")]
    retry: Option<String>,
    /// Threads that type records during ingest, sources loaded at once, and marts computed at once
    /// (default: number of cores).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// Landing folder to write into (default: <project>/warehouse/landing).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 200)]
    customers: u32,
    /// Number of daily extracts.
    #[arg(long, default_value_t = 3)]
    days: u32,
    /// Days of history carried by the first extract (an initial load).
    #[arg(long, default_value_t = 0)]
    history_days: u32,
    /// Date of the first extract.
    #[arg(long, default_value = "2024-06-01", value_name = "DATE")]
    start: NaiveDate,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Share of rows that get one kind of mess (rejected kinds are added as extra rows).
    #[arg(long, default_value_t = 0.0, value_name = "R")]
    dirty_rate: f64,
    /// BG/NBD r: shape of the purchase-rate Gamma.
    #[arg(long, default_value_t = 0.3)]
    bgnbd_r: f64,
    /// BG/NBD α: rate of the purchase-rate Gamma (per week).
    #[arg(long, default_value_t = 2.0)]
    bgnbd_alpha: f64,
    /// BG/NBD a: first shape of the dropout Beta.
    #[arg(long, default_value_t = 0.6)]
    bgnbd_a: f64,
    /// BG/NBD b: second shape of the dropout Beta.
    #[arg(long, default_value_t = 4.0)]
    bgnbd_b: f64,
    /// Gamma-Gamma p: shape of the spend per purchase.
    #[arg(long, default_value_t = 6.0)]
    gg_p: f64,
    /// Gamma-Gamma q: shape of the customer's spend rate ν.
    #[arg(long, default_value_t = 1.5)]
    gg_q: f64,
    /// Gamma-Gamma γ: rate of ν (in CNY; mean spend per purchase = p·γ/(q−1)).
    #[arg(long, default_value_t = 120.0)]
    gg_gamma: f64,
    /// Share of customers (the most valuable) that are enterprise accounts.
    #[arg(long, default_value_t = 0.05)]
    enterprise_share: f64,
}

/// glibc gives each thread that allocates its own heap arena, up to 8 per core, and keeps what
/// each arena freed: a night's peak RSS is lower with one arena per core, in the same time
/// (BENCHMARKS.md). Threads then share arenas: code that allocates per field on several threads
/// queues on their locks (the JSON-lines ingest did, until its strings were borrowed).
/// `engine::return_free_memory` trims the heap between models.
/// Only when MALLOC_ARENA_MAX is not set by the user.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
        // SAFETY: called first in main, before any other thread exists; mallopt only sets a limit.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, i32::try_from(cores).unwrap_or(i32::MAX)) };
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some(legacy::CHILD_ARG) {
        return legacy::child_main(args.next().as_deref());
    }
    if let Ok(binary) = std::env::current_exe() {
        legacy::isolate_in(binary);
    }
    limit_malloc_arenas();
    let cli = Cli::parse();
    let progress = if std::io::stderr().is_terminal() && !cli.quiet { Progress::bars() } else { Progress::lines() };
    init_logging(&cli, &progress);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli, progress)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(match e.kind() {
                ErrorKind::Config | ErrorKind::Usage => EXIT_CONFIG,
                ErrorKind::InputRejected => EXIT_INPUT_REJECTED,
                ErrorKind::Locked => EXIT_LOCKED,
                ErrorKind::LockLost => EXIT_LOCK_LOST,
                ErrorKind::TestsFailed => EXIT_TESTS_FAILED,
                ErrorKind::Storage => EXIT_STORAGE,
                ErrorKind::TimedOut => EXIT_TIMED_OUT,
                ErrorKind::RunFailed => EXIT_RUN_FAILED,
            })
        }
    }
}

async fn run(cli: Cli, progress: Progress) -> Result<(), Error> {
    let overrides =
        Overrides { warehouse: cli.warehouse.clone(), landing: cli.landing.clone(), engine: cli.engine.clone() };
    let default_workers = || std::thread::available_parallelism().map_or(2, |n| n.get());
    match cli.command {
        Command::Run(args) => {
            let session = Session::open(&cli.project, &overrides, progress)?;
            let mut request = RunRequest {
                pipeline: args.pipeline,
                dates: dates(args.as_of, args.from, args.to)?,
                select: args.select,
                rebuild: args.rebuild,
                full: args.full,
                rebuild_tables: args.rebuild_table,
                workers: args.workers.unwrap_or_else(default_workers),
            };
            if let Some(retry) = args.retry {
                let original = run::retry_request(&session, &retry).await?;
                request.pipeline = Some(original.pipeline);
                request.dates = original.dates;
                request.select = original.select;
                request.rebuild = original.rebuild || request.rebuild;
                request.full = original.full || request.full;
                request.rebuild_tables.extend(original.rebuild_tables);
            }
            let report = run::run(&session, &request).await?;
            say(&report);
            report.outcome()
        }
        Command::Dag { pipeline, format } => {
            print!("{}", run::dag(&cli.project, pipeline.as_deref(), matches!(format, DagFormat::Dot))?);
            Ok(())
        }
        Command::Query { sql, as_of, pipeline, format, timeout } => {
            let session = Session::open(&cli.project, &overrides, progress)?;
            let format = match format {
                QueryFormat::Table => OutputFormat::Table,
                QueryFormat::Csv => OutputFormat::Csv,
                QueryFormat::Json => OutputFormat::Json,
            };
            let timeout = match timeout {
                Some(seconds) => Some(
                    std::time::Duration::try_from_secs_f64(seconds)
                        .ok()
                        .filter(|t| !t.is_zero())
                        .ok_or_else(|| Error::Usage(format!("--timeout {seconds}: a number of seconds above 0")))?,
                ),
                None => None,
            };
            let mut out = std::io::BufWriter::new(std::io::stdout());
            run::query::query(&session, pipeline.as_deref(), &sql, as_of, format, timeout, &mut out).await
        }
        Command::Report { as_of, lang, out } => {
            let session = Session::open(&cli.project, &overrides, progress)?;
            let lang = match lang {
                Some(ReportLangArg::Zh) => ReportLang::Zh,
                Some(ReportLangArg::En) => ReportLang::En,
                None => session.project.settings.report.lang,
            };
            let engine = session.engine().await?;
            match out {
                Some(out) => {
                    let written = report::write_report(&engine, &session.warehouse, as_of, lang, &out).await?;
                    match written.night {
                        Some(night) => say(&format!("report of {night} written to {}", out.display())),
                        None => say(&format!("report (no committed marts yet) written to {}", out.display())),
                    }
                }
                None => say(&report::publish_report(&engine, &session.warehouse, as_of, lang).await?),
            }
            Ok(())
        }
        Command::Alerts { as_of, resend } => {
            let session = Session::open(&cli.project, &overrides, progress)?;
            println!("{}", run::alerts::alerts(&session, as_of, resend).await?);
            Ok(())
        }
        Command::Runs { limit } => {
            let session = Session::open(&cli.project, &overrides, progress)?;
            say(&run::runs(&session, limit).await?);
            Ok(())
        }
        Command::Unlock => {
            let session = Session::open(&cli.project, &overrides, progress)?;
            say(&run::unlock(&session).await?);
            Ok(())
        }
        Command::Migrate => {
            let session = Session::open(&cli.project, &overrides, progress)?;
            println!("{}", run::migrate(&session).await?);
            Ok(())
        }
        Command::Check => {
            say(&run::check(&cli.project)?);
            Ok(())
        }
        Command::Ingest { as_of, sources, pipeline, workers } => {
            let session = Session::open(&cli.project, &overrides, progress)?;
            let workers = workers.unwrap_or_else(default_workers);
            let report = run::ingest(&session, &IngestRequest { pipeline, as_of, sources, workers }).await?;
            say(&report);
            report.outcome()
        }
        Command::Generate(args) => {
            let options = GenerateOptions {
                out: args.out.unwrap_or_else(|| cli.project.join("warehouse").join("landing")),
                customers: args.customers,
                days: args.days,
                history_days: args.history_days,
                start: args.start,
                seed: args.seed,
                dirty_rate: args.dirty_rate,
                bgnbd: BgNbdParams { r: args.bgnbd_r, alpha: args.bgnbd_alpha, a: args.bgnbd_a, b: args.bgnbd_b },
                spend: GammaGammaParams { p: args.gg_p, q: args.gg_q, gamma: args.gg_gamma },
                enterprise_share: args.enterprise_share,
            };
            let manifest = keymart::generate::generate(&options, &progress)?;
            println!("{}", keymart::generate::summary(&manifest));
            Ok(())
        }
        Command::Serve { pg, http, flight } => {
            let session = Session::open(&cli.project, &overrides, progress)?;
            keymart::serve::serve(&session.project, &session.warehouse, &ServeOptions { pg, http, flight }).await
        }
        Command::Ballista(BallistaCommand::Scheduler(options)) => ballista::run_scheduler(options).await,
        Command::Ballista(BallistaCommand::Executor(options)) => ballista::run_executor(options).await,
    }
}

/// Print a summary or message on stdout, scrubbed of credentials (a model's or a load's failure
/// in a summary may quote a store's error). Query results are data and are printed as they are.
fn say(text: &impl std::fmt::Display) {
    println!("{}", scrub(&text.to_string()));
}

/// The dates a run covers: one date (default yesterday) or an inclusive range.
fn dates(as_of: Option<NaiveDate>, from: Option<NaiveDate>, to: Option<NaiveDate>) -> Result<Vec<NaiveDate>, Error> {
    match (as_of, from, to) {
        (_, Some(from), Some(to)) if from > to => Err(Error::Usage(format!("--from {from} is after --to {to}"))),
        (_, Some(from), Some(to)) => Ok(from.iter_days().take_while(|d| *d <= to).collect()),
        (Some(as_of), _, _) => Ok(vec![as_of]),
        _ => Ok(vec![chrono::Local::now().date_naive() - chrono::Duration::days(1)]),
    }
}

fn init_logging(cli: &Cli, progress: &Progress) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    // delta-rs logs as errors what keymart handles (a mart table not created yet) and returns
    // every failure it has as an error keymart reports itself.
    const QUIET_CRATES: &str = "deltalake_core=off,buoyant_kernel=off,buoyant_kernel_engine=off";
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYMART_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("keymart={level},{QUIET_CRATES},warn")));
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(progress.log_writer()).with_target(false);
    match cli.log_format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}
