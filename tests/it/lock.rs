//! The run lock fences: a run that lost its lock (paused past its time to live and taken over,
//! or unable to renew) publishes nothing more and exits 7; a contender whose clock is wrong does
//! not take a live lock; of several contenders for a dead lock exactly one wins. In every case
//! each committed manifest names files that exist. (The project of `run.rs`: a 2 s lock.)

use std::process::{Child, Output, Stdio};
use std::time::Duration;

use crate::run::{D1, manifest, project, run};
use crate::s3::{S3Server, SECRET, get};
use crate::support::{TestProject, assert_exit, keymart, manifest_files, stderr};

/// `keymart run --as-of D1 --rebuild` in the background.
fn start_run(project: &TestProject, env: &[(&str, &str)]) -> Child {
    keymart()
        .arg("--project")
        .arg(project.path())
        .args(["-q", "run", "--as-of", D1, "--rebuild"])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start keymart")
}

fn signal(child: &Child, signal: &str) {
    let status = std::process::Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill {signal}");
}

/// Every file the committed manifest of `customer_totals` names exists, and it is `run_id`'s.
fn committed_whole_by(project: &TestProject, output: &Output) {
    let manifest = manifest(project, "customer_totals", D1).expect("a committed snapshot");
    for file in manifest_files(&manifest) {
        assert!(project.warehouse().join(&file).exists(), "{file} is named by the manifest but missing");
    }
    let summary = String::from_utf8_lossy(&output.stdout);
    let run_id = manifest["run_id"].as_str().unwrap();
    assert!(summary.contains(&format!("run {run_id} ")), "committed by {run_id}, not by the winner: {summary}");
}

#[test]
fn a_paused_holder_whose_lock_was_taken_over_stops_before_its_commit() {
    let project = project();
    assert_exit(&run(&project, &["--as-of", D1]), 0);
    let (paused, marker) = project.start_paused(&["--as-of", D1, "--rebuild"], &[]);
    signal(&paused, "-STOP");
    // Its lock stops moving; a second run watches it for the whole time to live and takes over.
    std::thread::sleep(Duration::from_millis(2500));
    let winner = run(&project, &["--as-of", D1, "--rebuild"]);
    assert_exit(&winner, 0);
    std::fs::remove_file(&marker).unwrap();
    signal(&paused, "-CONT");
    let loser = paused.wait_with_output().unwrap();
    assert_exit(&loser, 7);
    let message = stderr(&loser);
    assert!(message.contains("lost the warehouse lock") && message.contains("stopped before"), "{message}");
    committed_whole_by(&project, &winner);
}

#[test]
fn a_contender_whose_clock_runs_an_hour_fast_does_not_take_a_live_lock() {
    let project = project();
    let (holder, marker) = project.start_paused(&["--as-of", D1], &[]);
    // By its clock the holder's lock expired long ago; watching it, it sees the holder renew.
    let skewed = keymart()
        .arg("--project")
        .arg(project.path())
        .args(["-q", "run", "--as-of", D1])
        .env("KEYMART_CLOCK_SKEW_SECONDS", "3600")
        .output()
        .unwrap();
    assert_exit(&skewed, 4);
    assert!(stderr(&skewed).contains("is locked by run"), "{}", stderr(&skewed));
    std::fs::remove_file(&marker).unwrap();
    let holder = holder.wait_with_output().unwrap();
    assert_exit(&holder, 0);
    committed_whole_by(&project, &holder);
}

#[test]
fn of_three_contenders_for_a_dead_lock_exactly_one_runs() {
    let project = project();
    assert_exit(&run(&project, &["--as-of", D1]), 0);
    let (mut dead, _) = project.start_paused(&["--as-of", D1, "--rebuild"], &[]);
    dead.kill().unwrap(); // SIGKILL: its lock stays behind
    dead.wait().unwrap();
    // Once its last renewal is older than its time to live, all three watch it, then race.
    std::thread::sleep(Duration::from_millis(2500));
    let contenders: Vec<Child> = (0..3).map(|_| start_run(&project, &[])).collect();
    let outputs: Vec<Output> = contenders.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let codes: Vec<Option<i32>> = outputs.iter().map(|o| o.status.code()).collect();
    assert_eq!(codes.iter().filter(|c| **c == Some(0)).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == Some(4)).count(), 2, "{codes:?}");
    let winner = outputs.iter().find(|o| o.status.code() == Some(0)).unwrap();
    committed_whole_by(&project, winner);
}

/// `committed_whole_by` for a warehouse at `wh/` of a bucket.
fn committed_whole_on_bucket_by(bucket: &std::sync::Arc<dyn object_store::ObjectStore>, output: &Output) {
    let manifest = crate::s3::snapshot_on_bucket(bucket, "customer_totals", D1).expect("a committed snapshot");
    for file in manifest_files(&manifest) {
        assert!(get(bucket, &format!("wh/{file}")).is_some(), "{file} is named by the log but missing");
    }
    let run_id = manifest["run_id"].as_str().unwrap();
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains(&format!("run {run_id} ")), "committed by {run_id}, not by the winner: {summary}");
}

/// keymart.yaml for the project of `run.rs` with its warehouse in bucket `lake` of the S3 server
/// at `endpoint` (a 2 s lock).
fn on_s3(project: &TestProject, endpoint: &str) {
    let settings = format!(
        "warehouse: s3://lake/wh\nlanding: \"{}\"\nlock_ttl_seconds: 2\nstorage:\n  max_retries: 1\n  retry_timeout_seconds: 2\n  options:\n    aws_endpoint: {endpoint}\n    aws_allow_http: \"true\"\n    aws_region: us-east-1\n    aws_access_key_id: testing\n    aws_secret_access_key: {SECRET}\n",
        project.landing().display(),
    );
    std::fs::write(project.path().join("keymart.yaml"), settings).unwrap();
}

/// The holder reaches the bucket through a relay the test cuts: its renewals fail while a
/// contender, reaching the bucket directly, sees the lock stop moving, takes it over and
/// publishes. With the relay back, the holder resumes and must publish nothing (exit 7).
#[test]
fn a_holder_cut_off_from_s3_stops_before_its_commit_once_its_lock_is_taken() {
    let server = S3Server::start(&[]);
    server.create_bucket("lake");
    let bucket = server.bucket("lake");
    let relay = crate::s3::Relay::start(server.port);
    let holder_project = project();
    on_s3(&holder_project, &relay.endpoint());
    // The contender reads the same landing folder, from the same bucket, without the relay.
    let contender_project = project();
    std::fs::write(
        contender_project.path().join("keymart.yaml"),
        std::fs::read_to_string(holder_project.path().join("keymart.yaml"))
            .unwrap()
            .replace(&relay.endpoint(), &server.endpoint()),
    )
    .unwrap();

    let (holder, marker) = holder_project.start_paused(&["--as-of", D1], &[]);
    relay.cut();
    std::thread::sleep(Duration::from_millis(2500));
    let winner = run(&contender_project, &["--as-of", D1]);
    assert_exit(&winner, 0);
    relay.open();
    std::fs::remove_file(&marker).unwrap();
    let loser = holder.wait_with_output().unwrap();
    assert_exit(&loser, 7);
    let message = stderr(&loser);
    assert!(message.contains("lost the warehouse lock"), "{message}");
    assert!(!message.contains(SECRET), "{message}");

    committed_whole_on_bucket_by(&bucket, &winner);
}

/// The same race on S3 (moto's server): the lock's links are created with `If-None-Match: *`
/// (`PutMode::Create`), which the server must refuse for all but the first contender.
#[test]
fn of_three_contenders_for_a_dead_lock_on_s3_exactly_one_runs() {
    let server = S3Server::start(&[]);
    server.create_bucket("lake");
    let bucket = server.bucket("lake");
    let project = project();
    on_s3(&project, &server.endpoint());
    assert_exit(&run(&project, &["--as-of", D1]), 0);
    let (mut dead, _) = project.start_paused(&["--as-of", D1, "--rebuild"], &[]);
    dead.kill().unwrap(); // SIGKILL: its lock stays behind in the bucket
    dead.wait().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let contenders: Vec<Child> = (0..3).map(|_| start_run(&project, &[])).collect();
    let outputs: Vec<Output> = contenders.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let codes: Vec<Option<i32>> = outputs.iter().map(|o| o.status.code()).collect();
    let shown: Vec<String> = outputs.iter().map(stderr).collect();
    assert_eq!(codes.iter().filter(|c| **c == Some(0)).count(), 1, "{codes:?} {shown:?}");
    assert_eq!(codes.iter().filter(|c| **c == Some(4)).count(), 2, "{codes:?} {shown:?}");
    let winner = outputs.iter().find(|o| o.status.code() == Some(0)).unwrap();
    committed_whole_on_bucket_by(&bucket, winner);
}
