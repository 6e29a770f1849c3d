//! The shipped pipeline on a real Ballista cluster on loopback: a scheduler and two executors
//! started from the keymart binary as separate processes (`keymart ballista …`), and
//! `keymart run --engine ballista://…` against it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::s3::{SECRET, committed_on_bucket, keymart_s3, s3_project, sample_lake};
use crate::support::{
    KilledOnDrop, SAMPLE_MARTS, TestProject, assert_exit, child_output_within, free_ports, keymart, output_within,
    repo_root, stderr, wait_for_port,
};

const DAYS: [&str; 3] = ["2024-06-01", "2024-06-02", "2024-06-03"];

/// A process whose output goes to a log file, killed when dropped.
struct Process {
    _child: KilledOnDrop,
    log: PathBuf,
}

impl Process {
    fn start(args: &[String], env: &[(&str, String)], log: PathBuf) -> Process {
        let file = std::fs::File::create(&log).unwrap();
        let child = keymart()
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("keymart ballista");
        Process { _child: KilledOnDrop(child), log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

struct Cluster {
    scheduler_port: u16,
    _scheduler: Process,
    executors: Vec<Process>,
    /// Logs and work folders; declared last, so it goes after the processes are killed.
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// A scheduler and `executors` executors, each with 2 task slots, all registered.
    fn start(executors: usize) -> Cluster {
        Cluster::start_with_env(executors, &[])
    }

    /// The same, the scheduler and executors started with `env` (their object-store credentials:
    /// the scheduler lists the files it plans over, the executors read them).
    fn start_with_env(executors: usize, env: &[(&str, String)]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut ports = free_ports(1 + 2 * executors).into_iter();
        let scheduler_port = ports.next().unwrap();
        let scheduler = Process::start(
            &["ballista", "scheduler", "--bind-port", &scheduler_port.to_string(), "--executor-timeout-seconds", "5"]
                .map(String::from),
            env,
            dir.path().join("scheduler.log"),
        );
        wait_for_port(scheduler_port, || format!("the scheduler:\n{}", scheduler.log()));
        let executors = (0..executors)
            .map(|i| {
                let (flight, grpc) = (ports.next().unwrap(), ports.next().unwrap());
                let work = dir.path().join(format!("executor-{i}"));
                std::fs::create_dir_all(&work).unwrap();
                let executor = Process::start(
                    &[
                        "-v", // the model functions log their fits at debug level: proof they ran here
                        "ballista",
                        "executor",
                        "--scheduler-port",
                        &scheduler_port.to_string(),
                        "--bind-port",
                        &flight.to_string(),
                        "--bind-grpc-port",
                        &grpc.to_string(),
                        "--concurrent-tasks",
                        "2",
                        "--work-dir",
                        work.to_str().unwrap(),
                        "--executor-heartbeat-interval-seconds",
                        "1",
                    ]
                    .map(String::from),
                    env,
                    dir.path().join(format!("executor-{i}.log")),
                );
                for port in [flight, grpc] {
                    wait_for_port(port, || format!("an executor:\n{}", executor.log()));
                }
                executor
            })
            .collect();
        // Registration is the executor's first call after it listens.
        std::thread::sleep(Duration::from_secs(1));
        Cluster { scheduler_port, _scheduler: scheduler, executors, _dir: dir }
    }

    fn engine(&self) -> String {
        format!("ballista://127.0.0.1:{}", self.scheduler_port)
    }

    fn logs(&self) -> String {
        self.executors.iter().map(Process::log).collect::<Vec<_>>().join("\n")
    }

    /// What the scheduler's readiness probe answers: its status line.
    fn readiness(&self) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.scheduler_port)).unwrap();
        write!(stream, "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response.lines().next().unwrap_or_default().to_string()
    }
}

fn sample_project() -> TestProject {
    let project = TestProject::shipped();
    crate::support::copy_dir(&repo_root().join("warehouse/landing"), &project.landing());
    project
}

#[test]
fn the_sample_on_a_loopback_cluster_publishes_the_same_bytes_as_the_local_engine() {
    let cluster = Cluster::start(2);
    let on_cluster = sample_project();
    let output = on_cluster.keymart(&["run", "--from", DAYS[0], "--to", DAYS[2], "--engine", &cluster.engine()]);
    assert_exit(&output, 0);

    let local = sample_project();
    assert_exit(&local.keymart(&["run", "--from", DAYS[0], "--to", DAYS[2]]), 0);
    for day in DAYS {
        for mart in SAMPLE_MARTS {
            assert!(
                on_cluster.committed_file(mart, day) == local.committed_file(mart, day),
                "{mart} {day}: the cluster's file differs from the local engine's"
            );
        }
    }
    // The ledger says where each model ran.
    let ledger = on_cluster.last_ledger();
    let engines: Vec<&str> = ledger["steps"].as_array().unwrap().iter().filter_map(|s| s["engine"].as_str()).collect();
    assert!(!engines.is_empty() && engines.iter().all(|e| *e == cluster.engine()), "{engines:?}");
    // The model functions ran on the executors: the fit is logged by an executor process.
    assert!(cluster.logs().contains("distinct observations"), "no executor fitted the model:\n{}", cluster.logs());
}

#[test]
fn an_unreachable_scheduler_is_one_clear_line_and_nothing_is_published() {
    let project = sample_project();
    let engine = format!("ballista://127.0.0.1:{}", free_ports(1)[0]);
    let output = project.keymart(&["run", "--as-of", DAYS[0], "--engine", &engine]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains(&format!("cannot reach the Ballista scheduler at {engine}")),
        "{}",
        stderr(&output)
    );
    assert!(!project.warehouse().join("marts").exists());
}

#[test]
fn an_executor_killed_mid_run_leaves_no_partial_mart_and_the_next_run_completes() {
    let mut cluster = Cluster::start(2);
    let project = sample_project();
    let engine = cluster.engine();
    // Paused after the first mart's files are written, before its commit: the run is mid-way.
    let (child, marker) = project.start_paused(&["--from", DAYS[0], "--to", DAYS[2], "--engine", &engine], &[]);
    drop(cluster.executors.remove(0)); // SIGKILLed and reaped (KilledOnDrop)
    std::fs::remove_file(&marker).unwrap();
    let output = child.wait_with_output().unwrap();
    // The scheduler notices the lost executor and runs its tasks again on the one left, so the
    // run finishes every date: a run that failed here would have published less than it could.
    assert_exit(&output, 0);
    // Every date is committed whole: every file the Delta log names exists.
    for day in DAYS {
        for mart in SAMPLE_MARTS {
            assert!(!project.committed_file(mart, day).is_empty(), "{mart} {day}");
        }
    }
    // The next run, on the executor left, completes every date.
    let rerun = project.keymart(&["run", "--from", DAYS[0], "--to", DAYS[2], "--engine", &engine]);
    assert_exit(&rerun, 0);
    for day in DAYS {
        for mart in SAMPLE_MARTS {
            assert!(!project.committed_file(mart, day).is_empty(), "{mart} {day}");
        }
    }
}

#[test]
fn with_the_warehouse_on_s3_the_executors_read_it_and_the_marts_match_the_local_engine() {
    let (server, bucket) = sample_lake();
    // The cluster has no keymart.yaml: the provider's environment variables reach the bucket.
    let credentials = [
        ("AWS_ENDPOINT", server.endpoint()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET.to_string()),
    ];
    let cluster = Cluster::start_with_env(2, &credentials);
    let on_s3 = s3_project(&server.endpoint(), "lake", "");
    let output = keymart_s3(&on_s3, &["run", "--from", DAYS[0], "--to", DAYS[1], "--engine", &cluster.engine()]);
    assert_exit(&output, 0);

    let local = sample_project();
    assert_exit(&local.keymart(&["run", "--from", DAYS[0], "--to", DAYS[1]]), 0);
    for day in &DAYS[..2] {
        for mart in SAMPLE_MARTS {
            let on_bucket = committed_on_bucket(&bucket, mart, day);
            assert!(on_bucket == local.committed_file(mart, day), "{mart} {day}: the bucket's file differs");
        }
    }
}

/// The sample project waiting at most `seconds` for a live executor.
fn project_waiting(seconds: u64) -> TestProject {
    let project = sample_project();
    let settings = std::fs::read_to_string(project.path().join("keymart.yaml")).unwrap();
    std::fs::write(project.path().join("keymart.yaml"), format!("{settings}\nballista_wait_seconds: {seconds}\n"))
        .unwrap();
    project
}

#[test]
fn a_scheduler_without_a_live_executor_fails_the_run_after_ballista_wait_seconds_with_exit_code_8() {
    let cluster = Cluster::start(0);
    let project = project_waiting(2);
    let mut command = keymart();
    command.arg("--project").arg(project.path()).args(["-q", "run", "--as-of", DAYS[0], "--engine", &cluster.engine()]);
    let output = output_within(command, Duration::from_secs(120));
    let said = "the scheduler says `not ready: 0/1 executors registered`";
    assert_stopped_without_executor(&project, &output, &cluster, said);
}

/// A run that exited 8 for want of a live executor (its message naming the cluster and `said`),
/// published nothing, recorded why, and released its lock (the date then runs locally).
fn assert_stopped_without_executor(
    project: &TestProject,
    output: &std::process::Output,
    cluster: &Cluster,
    said: &str,
) {
    assert_exit(output, 8);
    let message = stderr(output);
    let expected = format!(
        "the Ballista cluster at {} has had no live executor for 2 s (ballista_wait_seconds): {said}",
        cluster.engine()
    );
    assert!(message.contains(&expected), "{message}");
    assert!(!project.warehouse().join("marts").exists());
    let ledger = project.last_ledger();
    assert_eq!(ledger["status"], "failed", "{ledger}");
    assert!(ledger["error"].as_str().unwrap().contains("no live executor"), "{ledger}");
    assert_exit(&project.keymart(&["run", "--as-of", DAYS[0]]), 0);
}

#[test]
fn every_executor_lost_while_a_model_runs_fails_the_run_after_ballista_wait_seconds() {
    let mut cluster = Cluster::start(1);
    let project = project_waiting(2);
    // Paused with its first model's plan started: the cluster was ready, the job is not yet
    // submitted (Ballista submits at the first read), so the watch over the model's stream is
    // what must end the wait. (Ballista 55's scheduler also fails the job once no executor has
    // re-registered within its executor timeout, 5 s here; without the watch the run exits 1
    // with that engine error, later, and with the scheduler's default timeout much later.)
    let (child, marker) =
        project.start_paused_at("model_started", &["--as-of", DAYS[0], "--engine", &cluster.engine()], &[]);
    drop(cluster.executors.remove(0)); // SIGKILLed and reaped (KilledOnDrop)
    let lost = Instant::now();
    while !cluster.readiness().contains(" 503 ") {
        assert!(lost.elapsed() < Duration::from_secs(60), "the scheduler never noticed its executor was gone");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::remove_file(&marker).unwrap();
    let output = child_output_within(child, Duration::from_secs(120));
    assert_stopped_without_executor(
        &project,
        &output,
        &cluster,
        "the scheduler says `not ready: 0/1 executors registered`",
    );
}
