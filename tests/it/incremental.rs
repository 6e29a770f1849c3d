//! Incremental models: a night that starts from the previous night's state and recomputes only
//! the changed keys publishes byte for byte what computing everything from all history
//! (`--full`) publishes, and the keys it recomputes are exactly the ones whose rows changed.

use std::collections::BTreeMap;

use crate::marts::{Extracts, land_day};
use crate::support::{DeltaLog, TestProject, assert_exit, files_under, stderr};

/// Every committed mart file of a project, by `<mart>/as_of=<D>`, as a hash of its bytes.
fn published(project: &TestProject) -> BTreeMap<String, String> {
    let marts = project.warehouse().join("marts");
    let mut published = BTreeMap::new();
    for entry in std::fs::read_dir(&marts).unwrap() {
        let mart = entry.unwrap().file_name().to_string_lossy().into_owned();
        let days: std::collections::BTreeSet<String> =
            DeltaLog::read_dir(&marts.join(&mart)).files.into_values().collect();
        for day in days {
            let bytes = project.committed_file(&mart, &day);
            published.insert(format!("{mart}/as_of={day}"), format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes)));
        }
    }
    published
}

/// Both projects published the same snapshots with the same bytes; else which differ.
#[track_caller]
fn assert_same_marts(incremental: &TestProject, full: &TestProject) {
    let (nightly, whole) = (published(incremental), published(full));
    let differing: Vec<&String> =
        whole.keys().chain(nightly.keys()).filter(|s| nightly.get(*s) != whole.get(*s)).collect();
    assert!(differing.is_empty(), "differ from the full recomputation: {differing:?}");
}

/// `(model, as_of) → (the state it started from, keys recomputed, why computed whole)` of every
/// incremental model in every ledger of the project.
fn state_runs(project: &TestProject) -> BTreeMap<(String, String), (String, i64, String)> {
    let mut found = BTreeMap::new();
    for ledger in files_under(&project.warehouse().join("_runs")).iter().filter(|f| f.ends_with(".json")) {
        let text = std::fs::read(project.warehouse().join("_runs").join(ledger)).unwrap();
        let ledger: serde_json::Value = serde_json::from_slice(&text).unwrap();
        for step in ledger["steps"].as_array().unwrap() {
            if step["step"] == "model" && step["materialized"] == "incremental" {
                let state = &step["state"];
                found.insert(
                    (step["model"].as_str().unwrap().to_string(), step["as_of"].as_str().unwrap().to_string()),
                    (
                        state["since"].as_str().unwrap_or("-").to_string(),
                        state["changed_keys"].as_i64().unwrap_or(-1),
                        state["full"].as_str().unwrap_or("-").to_string(),
                    ),
                );
            }
        }
    }
    found
}

/// The same extracts in two projects: one run night by night, one with `--full`.
fn two_projects(land: impl Fn(&TestProject)) -> (TestProject, TestProject) {
    let (incremental, full) = (TestProject::shipped(), TestProject::shipped());
    land(&incremental);
    land(&full);
    (incremental, full)
}

#[test]
fn the_sample_night_by_night_publishes_what_full_recomputation_does() {
    let sample = crate::support::repo_root().join("warehouse/landing");
    let (incremental, full) = two_projects(|p| crate::support::copy_dir(&sample, &p.landing()));
    assert_exit(&incremental.keymart(&["run", "--from", "2024-06-01", "--to", "2024-06-03"]), 0);
    assert_exit(&full.keymart(&["run", "--from", "2024-06-01", "--to", "2024-06-03", "--full"]), 0);

    let nightly = published(&incremental);
    assert_eq!(nightly.len(), 27, "nine marts on three days: {:?}", nightly.keys());
    assert_same_marts(&incremental, &full);

    let runs = state_runs(&incremental);
    assert_eq!(runs[&("stg_orders".into(), "2024-06-01".into())], ("-".into(), -1, "no earlier state".into()));
    for (day, since) in [("2024-06-02", "2024-06-01"), ("2024-06-03", "2024-06-02")] {
        let (from, keys, _) = &runs[&("stg_customer_value_inputs".into(), day.into())];
        assert_eq!(from, since, "{day}");
        assert!((1..200).contains(keys), "{day}: {keys} of 200 customers recomputed");
    }
    let forced = state_runs(&full);
    assert!(forced.values().all(|(since, _, why)| since == "-" && why == "--full"), "{forced:?}");
}

/// Day 1 loads six customers and their history; days 2 and 3 change exactly some of them:
/// - C2's purchase of 2024-03-04 leaves churn's 90-day window on day 2 (a date the night passed);
/// - C4's order line is re-sent on day 2 under C5 (the new version's customer and the old one's);
/// - C6 calls the call centre on day 2 (a new row);
/// - C3's order dated 2024-06-03, loaded on day 1, comes into view on day 3;
/// - C1's shipment, in transit on day 1, is re-sent delivered on day 3.
fn edge_cases(project: &TestProject) {
    let customers = "customer_id\nC1\nC2\nC3\nC4\nC5\nC6\n";
    let day1 = Extracts {
        customers: Some(customers.into()),
        orders: Some(
            "order_id,line_no,customer_id,order_date,net_amount,cost_amount
             O1,1,C1,2024-05-01,100.00,60.00
             O2,1,C2,2024-03-04,50.00,20.00
             O5,1,C2,2024-05-10,70.00,20.00
             O3,1,C3,2024-06-03,80.00,30.00
             O4,1,C4,2024-05-20,40.00,10.00
             O6,1,C5,2024-04-01,30.00,10.00
             O7,1,C6,2024-05-05,20.00,5.00"
                .into(),
        ),
        shipments: Some(
            "shipment_id,order_id,customer_id,ship_date,promised_date,delivered_date,status,freight_cost
             S1,O1,C1,2024-05-02,2024-06-04,,in_transit,8.00"
                .into(),
        ),
        interactions: Some(
            "interaction_id,customer_id,started_at,duration_sec
             I1,C1,2024-05-03 10:00:00,300"
                .into(),
        ),
    };
    let day2 = Extracts {
        orders: Some(
            "order_id,line_no,customer_id,order_date,net_amount,cost_amount\nO4,1,C5,2024-05-20,40.00,10.00".into(),
        ),
        interactions: Some("interaction_id,customer_id,started_at,duration_sec\nI2,C6,2024-06-02 09:30:00,120".into()),
        ..Extracts::default()
    };
    let day3 = Extracts {
        shipments: Some(
            "shipment_id,order_id,customer_id,ship_date,promised_date,delivered_date,status,freight_cost
             S1,O1,C1,2024-05-02,2024-06-04,2024-06-03,delivered,8.00"
                .into(),
        ),
        ..Extracts::default()
    };
    for (day, extracts) in [("2024-06-01", &day1), ("2024-06-02", &day2), ("2024-06-03", &day3)] {
        let trimmed =
            |table: &Option<String>| table.as_ref().map(|t| t.lines().map(str::trim).collect::<Vec<_>>().join("\n"));
        let extracts = Extracts {
            customers: trimmed(&extracts.customers),
            orders: trimmed(&extracts.orders),
            shipments: trimmed(&extracts.shipments),
            interactions: trimmed(&extracts.interactions),
        };
        land_day(project, day, &extracts);
    }
}

#[test]
fn a_night_recomputes_exactly_the_customers_whose_rows_changed_and_matches_full_recomputation() {
    let (incremental, full) = two_projects(edge_cases);
    for day in ["2024-06-01", "2024-06-02", "2024-06-03"] {
        assert_exit(&incremental.keymart(&["run", "--as-of", day]), 0);
    }
    assert_exit(&full.keymart(&["run", "--from", "2024-06-01", "--to", "2024-06-03", "--full"]), 0);
    assert_same_marts(&incremental, &full);

    let runs = state_runs(&incremental);
    // Day 2: C2 (window), C4 and C5 (the moved line), C6 (the call). Day 3: C3 (came into
    // view), C1 (the delivery).
    assert_eq!(runs[&("stg_orders".into(), "2024-06-02".into())], ("2024-06-01".into(), 4, "-".into()));
    assert_eq!(runs[&("stg_orders".into(), "2024-06-03".into())], ("2024-06-02".into(), 2, "-".into()));

    // The moved line counts for C5 now, not C4; C3's order of the 3rd counts from the 3rd.
    let value = incremental.keymart(&[
        "query",
        "SELECT customer_id, revenue, order_count FROM customer_value WHERE customer_id IN ('C3', 'C4', 'C5') ORDER BY 1",
        "--format",
        "csv",
        "--as-of",
        "2024-06-02",
    ]);
    assert_exit(&value, 0);
    assert_eq!(
        crate::support::stdout(&value).trim(),
        "customer_id,revenue,order_count\nC3,0.00,0\nC4,0.00,0\nC5,70.00,2"
    );
}

#[test]
fn a_state_built_from_loads_that_changed_since_is_not_started_from() {
    let (incremental, full) = two_projects(edge_cases);
    for day in ["2024-06-01", "2024-06-02"] {
        assert_exit(&incremental.keymart(&["run", "--as-of", day]), 0);
    }
    // What a killed run left: files without a manifest, never read, removed by the next night.
    let orphan = incremental.warehouse().join("state/stg_orders/as_of=2024-05-31/killed-run/part-0.parquet");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"not parquet").unwrap();
    // Day 1 loaded again: the states of days 1 and 2 describe loads that are no longer there.
    assert_exit(&incremental.ingest("2024-06-01"), 0);
    assert_exit(&incremental.keymart(&["run", "--as-of", "2024-06-03"]), 0);
    let runs = state_runs(&incremental);
    assert_eq!(
        runs[&("stg_customer_service".into(), "2024-06-03".into())].2,
        "the state of 2024-06-02 was computed from other loads or another pipeline"
    );

    assert_exit(&full.keymart(&["run", "--from", "2024-06-01", "--to", "2024-06-03", "--full"]), 0);
    assert_same_marts(&incremental, &full);
    // Only the states a night may start from are kept: this one, the one before, the newest two.
    let kept: std::collections::BTreeSet<String> = files_under(&incremental.warehouse().join("state/stg_orders"))
        .into_iter()
        .map(|f| f.split('/').next().unwrap().to_string())
        .collect();
    assert_eq!(kept, ["as_of=2024-06-02".to_string(), "as_of=2024-06-03".to_string()].into());
}

/// Append model entries to the pipeline of a project made by `run::project`.
fn add_models(project: &TestProject, entries: &str) {
    let pipeline = std::fs::read_to_string(project.path().join("pipelines/test.yaml")).unwrap();
    std::fs::write(project.path().join("pipelines/test.yaml"), pipeline + entries).unwrap();
}

#[test]
fn check_names_what_an_incremental_model_may_not_read_or_compute() {
    // run.rs's project: source `orders`, view `stg_orders`, mart `customer_totals`.
    let project = crate::run::project();
    project.write(
        "sql/recency.sql",
        "SELECT customer_id,\n  $as_of - max(order_date) AS days,\n  count(CASE WHEN order_date > $as_of - 30 THEN 1 END) AS recent\nFROM stg_orders GROUP BY 1\n",
    );
    project.write("sql/on_totals.sql", "SELECT customer_id, orders FROM customer_totals\n");
    add_models(
        &project,
        "  - {path: sql/recency.sql, materialized: incremental, key: [customer_id]}\n  \
         - {path: sql/on_totals.sql, materialized: incremental, key: [customer_id]}\n",
    );
    let output = project.keymart(&["check"]);
    assert_exit(&output, 2);
    let reported = stderr(&output);
    assert!(reported.starts_with("error: 2 configuration errors:"), "{reported}");
    for expected in [
        "sql/recency.sql:2:3: `$as_of - max(order_date)`: incremental model `recency` may depend on $as_of only by comparing dates with it",
        "sql/on_totals.sql:1:33: incremental model `on_totals` reads `customer_totals`, a mart: it may read sources, views over sources and incremental models keyed by customer_id",
    ] {
        assert!(reported.contains(expected), "missing `{expected}` in:\n{reported}");
    }

    project.write("sql/keyless.sql", "SELECT customer_id FROM orders\n");
    add_models(&project, "  - {path: sql/keyless.sql, materialized: incremental}\n");
    let output = project.keymart(&["check"]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output)
            .contains("sql/keyless.sql: incremental model `keyless` needs a key (the columns it is recomputed by)"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_model_reading_a_source_loaded_whole_is_computed_whole_each_night() {
    let project = TestProject::new(
        r#"
sources:
  prices:
    path: prices/{as_of}/*.csv
    format: csv
    load: full
    columns:
      - {name: product_id, type: string, nullable: false}
      - {name: price, type: "decimal(10,2)", nullable: false}
models:
  - {path: sql/price_state.sql, materialized: incremental, key: [product_id]}
  - {path: sql/prices_now.sql, materialized: mart, key: [product_id]}
"#,
    );
    project.write("sql/price_state.sql", "SELECT product_id, max(price) AS price FROM prices GROUP BY 1\n");
    project.write("sql/prices_now.sql", "SELECT product_id, price FROM price_state\n");
    project.land("prices/2024-06-01/prices.csv", "product_id,price\nP1,1.00\nP2,2.00\n");
    project.land("prices/2024-06-02/prices.csv", "product_id,price\nP1,1.50\n");
    assert_exit(&project.keymart(&["run", "--from", "2024-06-01", "--to", "2024-06-02"]), 0);
    // Every row of a whole snapshot may have changed (here P2 is gone): no key keeps its rows.
    assert_eq!(
        state_runs(&project)[&("price_state".into(), "2024-06-02".into())].2,
        "source prices is loaded whole and has a load after 2024-06-01"
    );
    let rows = project.keymart(&["query", "SELECT product_id, price FROM prices_now ORDER BY 1", "--format", "csv"]);
    assert_eq!(crate::support::stdout(&rows).trim(), "product_id,price\nP1,1.50");
}

#[test]
fn a_state_that_lost_a_file_is_computed_whole_and_the_night_succeeds() {
    let (incremental, full) = two_projects(edge_cases);
    assert_exit(&incremental.keymart(&["run", "--as-of", "2024-06-01"]), 0);
    let state = incremental.warehouse().join("state/stg_customer_service/as_of=2024-06-01");
    let file = files_under(&state).into_iter().find(|f| f.ends_with(".parquet")).expect("a state file");
    std::fs::remove_file(state.join(&file)).unwrap();

    assert_exit(&incremental.keymart(&["run", "--as-of", "2024-06-02"]), 0);
    let runs = state_runs(&incremental);
    let why = &runs[&("stg_customer_service".into(), "2024-06-02".into())].2;
    assert_eq!(why, &format!("the state of 2024-06-01 has lost state/stg_customer_service/as_of=2024-06-01/{file}"));
    // The other models started from their states as usual.
    assert_eq!(runs[&("stg_orders".into(), "2024-06-02".into())].0, "2024-06-01");
    assert_exit(&full.keymart(&["run", "--from", "2024-06-01", "--to", "2024-06-02", "--full"]), 0);
    assert_same_marts(&incremental, &full);
}
