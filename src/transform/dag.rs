//! The model graph: which tables each model's SQL reads (found by DataFusion's SQL parser, no
//! templating), checked against the pipeline, ordered so every model runs after its inputs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::Path;

use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::resolve::resolve_table_references;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::GenericDialect;

use super::windows::{AsOfUses, as_of_uses};
use crate::config::yaml::Position;
use crate::config::{Diagnostics, Materialized, Model, Pipeline, TestKind};

pub use crate::config::HISTORY_SUFFIX;

/// What one model reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inputs {
    pub models: Vec<String>,
    pub sources: Vec<String>,
    /// Marts whose committed snapshots (`<mart>_history`) the model reads.
    pub histories: Vec<String>,
    /// How the SQL reads `$as_of` (what an incremental model may depend on).
    pub as_of: AsOfUses,
}

#[derive(Debug, Clone)]
pub struct Dag {
    /// Model names, each after all the models it reads.
    pub order: Vec<String>,
    pub inputs: BTreeMap<String, Inputs>,
}

impl Dag {
    /// Parse every model and order them; every problem found (syntax, unknown table, cycle).
    pub fn build(pipeline: &Pipeline) -> Result<Dag, Diagnostics> {
        let mut diagnostics = Diagnostics::default();
        let mut inputs = BTreeMap::new();
        for model in &pipeline.models {
            if let Some(found) = model_inputs(pipeline, model, &mut diagnostics) {
                inputs.insert(model.name.clone(), found);
            }
        }
        check_incremental(pipeline, &inputs, &mut diagnostics);
        let order = match topological_order(pipeline, &inputs) {
            Ok(order) => order,
            Err(cycle) => {
                let first = pipeline.model(&cycle[0]).expect("cycle of known models");
                at(
                    &mut diagnostics,
                    &first.file,
                    1,
                    1,
                    format!("models read each other in a cycle: {}", cycle.join(" → ")),
                );
                Vec::new()
            }
        };
        if diagnostics.is_empty() { Ok(Dag { order, inputs }) } else { Err(diagnostics) }
    }

    /// The selected models and everything downstream of them (`--select model+`); all models
    /// when `selection` is empty. In run order.
    pub fn select(&self, selection: &[String]) -> Result<Vec<String>, String> {
        if selection.is_empty() {
            return Ok(self.order.clone());
        }
        let mut chosen = BTreeSet::new();
        for item in selection {
            let (name, downstream) = match item.strip_suffix('+') {
                Some(name) => (name, true),
                None => (item.as_str(), false),
            };
            if !self.inputs.contains_key(name) {
                return Err(format!("no model `{name}` to select (models: {})", self.order.join(", ")));
            }
            chosen.insert(name.to_string());
            if downstream {
                chosen.extend(self.downstream_of(name));
            }
        }
        Ok(self.order.iter().filter(|m| chosen.contains(*m)).cloned().collect())
    }

    /// Every model that reads `name`, directly or not.
    pub fn downstream_of(&self, name: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let mut frontier = vec![name.to_string()];
        while let Some(current) = frontier.pop() {
            for (model, inputs) in &self.inputs {
                if inputs.models.contains(&current) && found.insert(model.clone()) {
                    frontier.push(model.clone());
                }
            }
        }
        found
    }

    /// The models a model and its relationship tests read.
    pub fn reads<'a>(&'a self, pipeline: &'a Pipeline, name: &str) -> impl Iterator<Item = &'a str> {
        let tested = pipeline.model(name).into_iter().flat_map(|m| &m.tests).filter_map(|t| match &t.kind {
            TestKind::Relationships { to_table, .. } if self.inputs.contains_key(to_table) => Some(to_table.as_str()),
            _ => None,
        });
        self.inputs[name].models.iter().map(String::as_str).chain(tested)
    }

    /// The selected models plus the views and tables they and their tests read (transitively),
    /// in run order. Upstream marts are read from their committed snapshots instead.
    pub fn with_upstream_views_and_tables(&self, pipeline: &Pipeline, selected: &[String]) -> Vec<String> {
        let mut wanted: BTreeSet<String> = selected.iter().cloned().collect();
        let mut frontier: Vec<String> = selected.to_vec();
        while let Some(name) = frontier.pop() {
            for input in self.reads(pipeline, &name) {
                if !pipeline.is_mart(input) && wanted.insert(input.to_string()) {
                    frontier.push(input.to_string());
                }
            }
        }
        self.order.iter().filter(|m| wanted.contains(*m)).cloned().collect()
    }

    /// What `models` read together: their sources, the marts whose history they read, and
    /// the models they read that are not among them (read from committed snapshots).
    pub fn inputs_of(&self, models: &[String]) -> Inputs {
        let union = |pick: fn(&Inputs) -> &Vec<String>| -> Vec<String> {
            let all: BTreeSet<&String> = models.iter().flat_map(|m| pick(&self.inputs[m])).collect();
            all.into_iter().cloned().collect()
        };
        let upstream = union(|i| &i.models).into_iter().filter(|m| !models.contains(m)).collect();
        Inputs {
            models: upstream,
            sources: union(|i| &i.sources),
            histories: union(|i| &i.histories),
            ..Inputs::default()
        }
    }

    /// `models` (in run order) cut into the groups that run side by side: a staging model
    /// alone, or the marts that follow one another without reading each other (their other
    /// inputs are done by then).
    pub fn batches<'m>(&self, pipeline: &Pipeline, models: &'m [String]) -> Vec<&'m [String]> {
        let mut batches = Vec::new();
        let mut next = 0;
        while next < models.len() {
            let size = self.side_by_side(pipeline, &models[next..]);
            batches.push(&models[next..next + size]);
            next += size;
        }
        batches
    }

    /// How many of `models` run side by side from the first.
    fn side_by_side(&self, pipeline: &Pipeline, models: &[String]) -> usize {
        if !models.first().is_some_and(|first| pipeline.is_mart(first)) {
            return 1;
        }
        let mut batch: BTreeSet<&str> = BTreeSet::new();
        for name in models {
            if !pipeline.is_mart(name) || self.reads(pipeline, name).any(|input| batch.contains(input)) {
                break;
            }
            batch.insert(name.as_str());
        }
        batch.len()
    }

    /// The graph as text: one line per model with what it reads.
    pub fn to_text(&self, pipeline: &Pipeline) -> String {
        let mut out = String::new();
        for name in &self.order {
            let model = pipeline.model(name).expect("ordered models exist");
            let inputs = &self.inputs[name];
            let mut reads: Vec<String> = inputs.sources.iter().map(|s| format!("source {s}")).collect();
            reads.extend(inputs.models.iter().cloned());
            reads.extend(inputs.histories.iter().map(|m| format!("{m}{HISTORY_SUFFIX}")));
            let _ = writeln!(
                out,
                "{name} ({}) ← {}",
                model.materialized,
                if reads.is_empty() { "-".into() } else { reads.join(", ") }
            );
        }
        out
    }

    /// The graph in Graphviz dot.
    pub fn to_dot(&self, pipeline: &Pipeline) -> String {
        let mut out = String::from("digraph keymart {\n  rankdir=LR;\n");
        for source in &pipeline.sources {
            let _ = writeln!(out, "  \"{}\" [shape=cylinder];", source.name);
        }
        for name in &self.order {
            let shape = match pipeline.model(name).map(|m| m.materialized) {
                Some(Materialized::Mart) => "box3d",
                Some(Materialized::Table) => "box",
                Some(Materialized::Incremental) => "box, peripheries=2",
                _ => "ellipse",
            };
            let _ = writeln!(out, "  \"{name}\" [shape={shape}];");
            let inputs = &self.inputs[name];
            for input in inputs.sources.iter().chain(&inputs.models) {
                let _ = writeln!(out, "  \"{input}\" -> \"{name}\";");
            }
            for mart in &inputs.histories {
                let _ = writeln!(out, "  \"{mart}\" -> \"{name}\" [style=dashed, label=\"history\"];");
            }
        }
        out.push_str("}\n");
        out
    }
}

fn at(d: &mut Diagnostics, file: &Path, line: u64, column: u64, message: String) {
    d.at(file, &Position { line, column, path: String::new() }, message);
}

/// Parse one model's SQL and classify the tables it reads.
fn model_inputs(pipeline: &Pipeline, model: &Model, d: &mut Diagnostics) -> Option<Inputs> {
    let mut statements = match DFParser::parse_sql_with_dialect(&model.sql, &GenericDialect {}) {
        Ok(statements) => statements,
        Err(e) => {
            let message = e.to_string();
            let (line, column) = parser_position(&message).unwrap_or((1, 1));
            at(d, &model.file, line, column, format!("SQL syntax: {}", strip_position(&message)));
            return None;
        }
    };
    if statements.len() != 1 {
        at(d, &model.file, 1, 1, format!("a model is one SELECT; found {} statements", statements.len()));
        return None;
    }
    let statement = statements.pop_front().expect("one statement");
    if !matches!(&statement, DFStatement::Statement(s) if matches!(s.as_ref(), Statement::Query(_))) {
        at(d, &model.file, 1, 1, "a model is one SELECT (or WITH … SELECT), not DDL or DML".to_string());
        return None;
    }
    let (tables, _ctes) = match resolve_table_references(&statement, true) {
        Ok(found) => found,
        Err(e) => {
            at(d, &model.file, 1, 1, format!("cannot resolve the tables read: {e}"));
            return None;
        }
    };
    let mut inputs = Inputs::default();
    if let DFStatement::Statement(query) = &statement {
        inputs.as_of = as_of_uses(query);
    }
    for table in tables {
        let name = table.table().to_string();
        if pipeline.model(&name).is_some() {
            if name == model.name {
                let (line, column) = word_position(&model.sql, &name);
                at(
                    d,
                    &model.file,
                    line,
                    column,
                    format!("model `{name}` reads itself (use `{name}{HISTORY_SUFFIX}` for its earlier snapshots)"),
                );
            } else {
                inputs.models.push(name);
            }
        } else if pipeline.source(&name).is_some() {
            inputs.sources.push(name);
        } else if let Some(mart) = name.strip_suffix(HISTORY_SUFFIX).filter(|m| pipeline.is_mart(m)) {
            inputs.histories.push(mart.to_string());
        } else {
            let (line, column) = word_position(&model.sql, &name);
            at(
                d,
                &model.file,
                line,
                column,
                format!("unknown table `{name}`: not a source, model or <mart>{HISTORY_SUFFIX} of this pipeline"),
            );
        }
    }
    Some(inputs)
}

/// An incremental model is recomputed each night only for the keys whose inputs changed, so it
/// may read only what keymart can trace a change through: sources, views over sources, and
/// incremental models with the same key; and it may depend on `$as_of` only through date
/// comparisons (`windows`). Each break of that is reported where it is.
fn check_incremental(pipeline: &Pipeline, inputs: &BTreeMap<String, Inputs>, d: &mut Diagnostics) {
    for model in pipeline.models.iter().filter(|m| m.materialized == Materialized::Incremental) {
        let Some(reads) = inputs.get(&model.name) else { continue };
        let complain = |d: &mut Diagnostics, table: &str, why: String| {
            let (line, column) = word_position(&model.sql, table);
            let message = format!(
                "incremental model `{}` reads `{table}`, {why}: it may read sources, views over sources and \
                 incremental models keyed by {}",
                model.name,
                model.key.join(", ")
            );
            at(d, &model.file, line, column, message);
        };
        for mart in &reads.histories {
            complain(d, &format!("{mart}{HISTORY_SUFFIX}"), "a mart's history".into());
        }
        for name in &reads.models {
            let Some(input) = pipeline.model(name) else { continue };
            match input.materialized {
                Materialized::View => {}
                Materialized::Incremental if input.key == model.key => {}
                Materialized::Incremental => {
                    complain(d, name, format!("keyed by {} instead", input.key.join(", ")));
                }
                other => complain(d, name, format!("a {other}")),
            }
        }
        for name in views_read(pipeline, inputs, &model.name) {
            let view = pipeline.model(&name).expect("views_read names models");
            let Some(view_reads) = inputs.get(&name) else { continue };
            for other in view_reads.models.iter().filter(|m| !is_view(pipeline, m)) {
                complain(d, &name, format!("a view that reads `{other}` (not a source or view)"));
            }
            report_as_of(d, view, &view_reads.as_of, &model.name);
        }
        report_as_of(d, model, &reads.as_of, &model.name);
    }
}

fn report_as_of(d: &mut Diagnostics, model: &Model, uses: &AsOfUses, incremental: &str) {
    for (line, column, around) in &uses.elsewhere {
        let message = format!(
            "`{around}`: incremental model `{incremental}` may depend on $as_of only by comparing dates with it \
             (`d <= $as_of`, `d > $as_of - $window_days`); a value computed from $as_of changes every key every \
             night (compute it in a view or mart that reads this model)"
        );
        at(d, &model.file, *line, *column, message);
    }
}

/// The views `name` reads, directly or through other views.
pub fn views_read(pipeline: &Pipeline, inputs: &BTreeMap<String, Inputs>, name: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut frontier = vec![name.to_string()];
    while let Some(current) = frontier.pop() {
        for input in inputs.get(&current).map(|i| i.models.as_slice()).unwrap_or_default() {
            if is_view(pipeline, input) && found.insert(input.clone()) {
                frontier.push(input.clone());
            }
        }
    }
    found
}

fn is_view(pipeline: &Pipeline, name: &str) -> bool {
    pipeline.model(name).is_some_and(|m| m.materialized == Materialized::View)
}

/// Whether `name` is a mart of the pipeline (a published snapshot, not staging).
/// The models `name` waits on: those it reads whose SQL parsed (a model whose SQL did not parse
/// has its error reported already, and ordering around it must not fail on it again).
fn waits_on<'a>(inputs: &'a BTreeMap<String, Inputs>, name: &str) -> impl Iterator<Item = &'a String> {
    inputs[name].models.iter().filter(|m| inputs.contains_key(*m))
}

/// Kahn's algorithm, ties broken by pipeline order so the order is stable. On a cycle, the cycle.
fn topological_order(pipeline: &Pipeline, inputs: &BTreeMap<String, Inputs>) -> Result<Vec<String>, Vec<String>> {
    let names: Vec<&str> =
        pipeline.models.iter().map(|m| m.name.as_str()).filter(|n| inputs.contains_key(*n)).collect();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < names.len() {
        let ready =
            names.iter().find(|n| !done.contains(**n) && waits_on(inputs, n).all(|m| done.contains(m.as_str())));
        match ready {
            Some(name) => {
                done.insert(name);
                order.push(name.to_string());
            }
            None => return Err(find_cycle(&names, &done, inputs)),
        }
    }
    Ok(order)
}

fn find_cycle(names: &[&str], done: &BTreeSet<&str>, inputs: &BTreeMap<String, Inputs>) -> Vec<String> {
    // Every remaining model waits on another remaining one: walking "waits on" must loop.
    let start = names.iter().find(|n| !done.contains(**n)).expect("a remaining model");
    let mut path: Vec<String> = vec![start.to_string()];
    loop {
        let current = path.last().expect("non-empty path").clone();
        let next = waits_on(inputs, &current)
            .find(|m| !done.contains(m.as_str()))
            .expect("waits on a remaining model")
            .clone();
        if let Some(i) = path.iter().position(|p| *p == next) {
            let mut cycle = path[i..].to_vec();
            cycle.push(next);
            return cycle;
        }
        path.push(next);
    }
}

/// `… at Line: 3, Column: 14` in sqlparser messages.
fn parser_position(message: &str) -> Option<(u64, u64)> {
    let line = message.split("Line: ").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
    let column = message.split("Column: ").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
    Some((line, column))
}

fn strip_position(message: &str) -> &str {
    message
        .split(" at Line: ")
        .next()
        .unwrap_or(message)
        .trim_start_matches("SQL error: ")
        .trim_start_matches("ParserError(\"")
}

/// Line and column of the first whole-word occurrence of `word` (case-insensitive).
fn word_position(sql: &str, word: &str) -> (u64, u64) {
    let lower = sql.to_ascii_lowercase();
    let word = word.to_ascii_lowercase();
    let is_ident = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let mut from = 0;
    while let Some(found) = lower[from..].find(&word) {
        let start = from + found;
        let end = start + word.len();
        if !is_ident(lower[..start].chars().next_back()) && !is_ident(lower[end..].chars().next()) {
            let line = lower[..start].matches('\n').count() as u64 + 1;
            let column = (start - lower[..start].rfind('\n').map_or(0, |p| p + 1)) as u64 + 1;
            return (line, column);
        }
        from = end;
    }
    (1, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped pipeline: its staging models one by one, then the marts in the groups the
    /// DAG allows in its order (customer_value and customer_churn read model_parameters,
    /// key_accounts reads them, key_account_history and customer_profile read key_accounts), then
    /// the two check views, which read marts.
    #[test]
    fn marts_that_read_none_of_each_other_run_side_by_side() {
        let project = crate::config::Project::load(Path::new(env!("CARGO_MANIFEST_DIR"))).expect("the shipped project");
        let pipeline = project.select_pipeline(None).expect("one pipeline");
        let dag = Dag::build(pipeline).expect("the shipped DAG builds");
        let groups: Vec<String> = dag.batches(pipeline, &dag.order).iter().map(|b| b.join(" ‖ ")).collect();
        let staging = groups.iter().take_while(|g| g.starts_with("stg_")).count();
        assert!(groups[..staging].iter().all(|g| !g.contains('‖')), "{groups:#?}");
        assert_eq!(
            groups[staging..],
            [
                "model_parameters ‖ customer_rfm ‖ service_quality",
                "customer_value ‖ customer_churn",
                "key_accounts",
                "key_account_history ‖ segment_migration ‖ customer_profile",
                "segment_migration_rows",
                "key_account_current_rows",
            ]
        );
    }

    #[test]
    fn positions_in_sql() {
        assert_eq!(word_position("SELECT *\nFROM  ordersx JOIN orders o", "orders"), (2, 20));
        assert_eq!(
            parser_position("sql parser error: Expected: end of statement, found: x at Line: 3, Column: 14"),
            Some((3, 14))
        );
    }
}
