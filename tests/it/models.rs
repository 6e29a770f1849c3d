//! The customer-base models checked against independent truth: the published CDNOW results, and
//! the parameters the generator drew its customers from. Both go through the shipped pipeline,
//! as a user would run it.

use std::fmt::Write as _;

use crate::support::{TestProject, assert_exit, repo_root, stdout};

/// Query the committed marts, CSV rows without the header.
fn query_rows(project: &TestProject, sql: &str) -> Vec<Vec<String>> {
    let output = project.keymart(&["query", sql, "--format", "csv"]);
    assert_exit(&output, 0);
    stdout(&output).lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect()
}

fn number(text: &str) -> f64 {
    text.parse().unwrap_or_else(|_| panic!("not a number: {text}"))
}

/// Same value to `digits` significant digits.
#[track_caller]
fn assert_significant(actual: f64, expected: f64, digits: i32, what: &str) {
    let scale = 10f64.powi(digits - 1 - expected.abs().log10().floor() as i32);
    assert_eq!((actual * scale).round(), (expected * scale).round(), "{what}: {actual} vs published {expected}");
}

/// Land the CDNOW sample as the shipped pipeline's extracts dated 1997-09-30 (the calibration end).
fn cdnow_project() -> TestProject {
    let project = TestProject::shipped();
    let text = std::fs::read_to_string(repo_root().join("tests/fixtures/cdnow/CDNOW_sample.txt")).unwrap();
    let mut orders = String::from("order_id,customer_id,order_date,category,quantity,net_amount,currency\n");
    let mut customers = std::collections::BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (customer, date, cds, value) = (format!("C{}", fields[1]), fields[2], fields[3], fields[4]);
        let iso = format!("{}-{}-{}", &date[..4], &date[4..6], &date[6..]);
        customers.entry(customer.clone()).or_insert_with(|| iso.clone());
        writeln!(orders, "O{i},{customer},{iso},music,{cds},{value},USD").unwrap();
    }
    let mut master = String::from("customer_id,created_date\n");
    for (customer, first) in &customers {
        writeln!(master, "{customer},{first}").unwrap();
    }
    let extracts = crate::marts::Extracts { customers: Some(master), orders: Some(orders), ..Default::default() };
    crate::marts::land_day(&project, "1997-09-30", &extracts);
    project
}

#[test]
fn cdnow_fits_reproduce_the_published_results() {
    let project = cdnow_project();
    assert_exit(&project.keymart(&["run", "--as-of", "1997-09-30"]), 0);

    // The staging summary is the published one: x, t_x, T and the mean repeat spend per customer.
    let summary =
        std::fs::read_to_string(repo_root().join("tests/fixtures/cdnow/cdnow_customers_summary_with_transactions.csv"))
            .unwrap();
    let ours = query_rows(
        &project,
        "SELECT customer_id, repeat_purchases, weeks_to_last_purchase, weeks_observed, coalesce(mean_repeat_spend, 0) \
         FROM customer_value ORDER BY customer_id",
    );
    assert_eq!(ours.len(), 2357, "every CDNOW customer bought in the calibration period");
    for (published, ours) in summary.lines().skip(1).zip(&ours) {
        let published: Vec<f64> = published.split(',').map(number).collect();
        let ours: Vec<f64> = ours[1..].iter().map(|v| number(v)).collect();
        assert_eq!(ours[0], published[1], "x of customer {}", published[0]);
        for k in 1..4 {
            assert!(
                (ours[k] - published[k + 1]).abs() < 0.0051,
                "customer {}: {ours:?} vs {published:?}",
                published[0]
            );
        }
    }

    let parameters = &query_rows(
        &project,
        "SELECT bgnbd_r, bgnbd_alpha, bgnbd_a, bgnbd_b, bgnbd_ll, bgnbd_customers, gg_p, gg_q, gg_v, gg_ll, gg_customers FROM model_parameters",
    )[0];
    let p: Vec<f64> = parameters.iter().map(|v| number(v)).collect();
    assert_significant(p[0], 0.2426, 4, "r");
    assert_significant(p[1], 4.4136, 4, "alpha");
    assert_significant(p[2], 0.7929, 4, "a");
    assert_significant(p[3], 2.4259, 4, "b");
    assert!((p[4] - -9582.43).abs() < 0.005, "BG/NBD log-likelihood {}", p[4]);
    assert_eq!(p[5], 2357.0);
    assert_significant(p[6], 6.25, 3, "p");
    assert_significant(p[7], 3.74, 3, "q");
    assert_significant(p[8], 15.44, 4, "gamma");
    assert!((p[9] - -4055.92).abs() < 0.005, "Gamma-Gamma log-likelihood {}", p[9]);
    assert_eq!(p[10], 946.0, "fitted on the 946 repeat buyers");

    // lifetimes' check values, with the parameters just fitted, through the SQL functions.
    let checks = &query_rows(
        &project,
        "SELECT bgnbd_expected_purchases(bgnbd_r, bgnbd_alpha, bgnbd_a, bgnbd_b, 2, 30.43, 38.86, 39), \
                bgnbd_expected_purchases(bgnbd_r, bgnbd_alpha, bgnbd_a, bgnbd_b, 0, 0, 0, 1), \
                bgnbd_expected_purchases(bgnbd_r, bgnbd_alpha, bgnbd_a, bgnbd_b, 0, 0, 0, 3), \
                bgnbd_expected_purchases(bgnbd_r, bgnbd_alpha, bgnbd_a, bgnbd_b, 0, 0, 0, 32), \
                bgnbd_expected_purchases(bgnbd_r, bgnbd_alpha, bgnbd_a, bgnbd_b, 0, 0, 0, 78) \
         FROM model_parameters",
    )[0];
    for (value, expected) in checks.iter().zip([1.226, 0.0532, 0.1506, 1.0437, 1.8576]) {
        assert!((number(value) - expected).abs() < 5e-4, "{value} vs {expected}");
    }
    let mut first_three = Vec::new();
    for line in summary.lines().skip(1).take(3) {
        let f: Vec<&str> = line.split(',').collect();
        first_three.push(format!("gamma_gamma_expected_spend(gg_p, gg_q, gg_v, {}, {})", f[1], f[4]));
    }
    let spend = &query_rows(&project, &format!("SELECT {} FROM model_parameters", first_three.join(", ")))[0];
    for (value, expected) in spend.iter().zip([24.65, 18.91, 35.17]) {
        // Published to two decimals; lifetimes asserts them with rtol 1e-3, and so do we.
        assert!((number(value) - expected).abs() < 1e-3 * expected, "{value} vs {expected}");
    }
}

/// The generator's BG/NBD and Gamma-Gamma parameters come back from the shipped pipeline's fit.
/// Rates well below one purchase a day keep the day-resolution rounding of dates small; a two-year
/// window identifies the dropout process.
#[test]
fn fits_recover_the_generators_parameters() {
    let project = TestProject::shipped();
    let truth = [
        ("bgnbd_r", 2.0),
        ("bgnbd_alpha", 20.0),
        ("bgnbd_a", 1.5),
        ("bgnbd_b", 6.0),
        ("gg_p", 6.0),
        ("gg_q", 3.0),
        ("gg_v", 500.0),
    ];
    let output = crate::support::keymart()
        .args(["-q", "generate", "--out"])
        .arg(project.landing())
        .args(["--customers", "100000", "--days", "1", "--history-days", "729", "--start", "2024-12-31", "--seed", "1"])
        .args([
            "--bgnbd-r",
            "2",
            "--bgnbd-alpha",
            "20",
            "--bgnbd-a",
            "1.5",
            "--bgnbd-b",
            "6",
            "--gg-p",
            "6",
            "--gg-q",
            "3",
            "--gg-gamma",
            "500",
        ])
        .output()
        .unwrap();
    assert_exit(&output, 0);
    assert_exit(&project.keymart(&["run", "--as-of", "2024-12-31", "--select", "model_parameters"]), 0);
    let names: Vec<&str> = truth.iter().map(|(n, _)| *n).collect();
    let fitted = &query_rows(&project, &format!("SELECT {} FROM model_parameters", names.join(", ")))[0];
    for ((name, expected), value) in truth.iter().zip(fitted) {
        let value = number(value);
        assert!((value / expected - 1.0).abs() < 0.05, "{name}: fitted {value}, drawn with {expected}");
    }
}
