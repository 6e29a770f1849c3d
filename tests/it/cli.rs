//! The command line as a user sees it: help, summaries and errors of the real binary, as
//! snapshots (insta-cmd), with what changes from run to run masked: run ids, temporary paths,
//! timings.

use insta_cmd::assert_cmd_snapshot;

use crate::support::{TestProject, keymart};

/// Masks for what differs between two runs of the same command.
fn settings(project: Option<&TestProject>) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{4}", "[RUN_ID]");
    settings.add_filter(r"\d+\.\d+ ?s\b", "[SECONDS]");
    if let Some(project) = project {
        let root = project.path().canonicalize().unwrap();
        settings.add_filter(&regex_escape(&root.display().to_string()), "[PROJECT]");
        settings.add_filter(&regex_escape(&project.path().display().to_string()), "[PROJECT]");
    }
    settings
}

fn regex_escape(text: &str) -> String {
    text.chars().fold(String::new(), |mut out, c| {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
        out
    })
}

#[test]
fn help_lists_every_command() {
    settings(None).bind(|| assert_cmd_snapshot!(keymart().arg("--help")));
}

#[test]
fn run_help_documents_its_options() {
    settings(None).bind(|| assert_cmd_snapshot!(keymart().args(["run", "--help"])));
}

#[test]
fn check_of_the_shipped_project_says_what_it_holds() {
    let project = TestProject::shipped();
    settings(Some(&project)).bind(|| assert_cmd_snapshot!(keymart().arg("--project").arg(project.path()).arg("check")));
}

#[test]
fn an_unknown_command_is_a_usage_error() {
    settings(None).bind(|| assert_cmd_snapshot!(keymart().arg("publish")));
}

#[test]
fn a_run_prints_one_line_per_model_and_where_its_ledger_is() {
    let project = TestProject::shipped();
    crate::support::copy_dir(&crate::support::repo_root().join("warehouse/landing"), &project.landing());
    settings(Some(&project)).bind(|| {
        assert_cmd_snapshot!(keymart().arg("--project").arg(project.path()).args([
            "-q",
            "run",
            "--as-of",
            "2024-06-01"
        ]))
    });
    // The night's report is published after its marts, and latest.html is that night's.
    let report = std::fs::read_to_string(project.warehouse().join("reports/as_of=2024-06-01/index.html")).unwrap();
    assert!(report.contains("2024-06-01"), "the report names its night");
    assert_eq!(std::fs::read_to_string(project.warehouse().join("reports/latest.html")).unwrap(), report);
}
