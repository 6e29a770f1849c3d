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
use crate::config::{Diagnostics, Materialized, Model, Pipeline};

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
        } else if let Some(mart) = name.strip_suffix(HISTORY_SUFFIX).filter(|m| is_mart(pipeline, m)) {
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
pub fn is_mart(pipeline: &Pipeline, name: &str) -> bool {
    pipeline.model(name).is_some_and(|m| m.materialized == Materialized::Mart)
}

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

    #[test]
    fn positions_in_sql() {
        assert_eq!(word_position("SELECT *\nFROM  ordersx JOIN orders o", "orders"), (2, 20));
        assert_eq!(
            parser_position("sql parser error: Expected: end of statement, found: x at Line: 3, Column: 14"),
            Some((3, 14))
        );
    }
}
