//! Checks that need the whole parsed project: names, cross-references, option combinations.
//! Every finding is recorded; nothing stops at the first.

use std::collections::HashSet;
use std::path::Path;

use super::contract::{ColumnType, FileFormat, LoadMode, SourceContract, check_chrono_format, expand_as_of};
use super::yaml::Position;
use super::{Diagnostics, Materialized, Pipeline, Project, TestKind};

pub(super) fn project(project: &Project, d: &mut Diagnostics) {
    let settings_file = Path::new(super::PROJECT_FILE);
    let storage = &project.settings.storage;
    for problem in storage.value.problems() {
        d.at(settings_file, &storage.position, problem);
    }
    if let Some(engine) = &project.settings.engine
        && let Err(problem) = super::EngineSpec::parse(&engine.value)
    {
        d.at(settings_file, &engine.position, problem);
    }
    if let Some(base_url) = &project.settings.report.base_url
        && !matches!(url::Url::parse(&base_url.value), Ok(url) if matches!(url.scheme(), "http" | "https"))
    {
        d.at(settings_file, &base_url.position, "must be an absolute http(s) URL (where reports/ is served)");
    }
    super::alerts::validate(&project.settings.alerts.entries, settings_file, d);
    let ratio = &project.settings.defaults.max_reject_ratio;
    if !(0.0..=1.0).contains(&ratio.value) {
        d.at(settings_file, &ratio.position, "must be between 0 and 1");
    }
    let settings = &project.settings;
    for (setting, range, unit) in [
        (&settings.lock_ttl_seconds, super::LOCK_TTL_SECONDS, " seconds"),
        (&settings.memory_limit_mb, super::MEMORY_LIMIT_MB, " MB"),
        (&settings.file_retention_seconds, super::FILE_RETENTION_SECONDS, " seconds"),
        (&settings.ballista_wait_seconds, super::BALLISTA_WAIT_SECONDS, " seconds"),
        (&settings.row_group_rows, super::ROW_GROUP_ROWS, " rows"),
    ] {
        if !range.contains(&setting.value) {
            let message = format!("must be between {} and {}{unit}", range.start(), range.end());
            d.at(settings_file, &setting.position, message);
        }
    }
    if settings.file_retention_seconds.value < settings.lock_ttl_seconds.value {
        let message =
            "must be at least `lock_ttl_seconds`: a run's files are not removed while it may still commit them";
        d.at(settings_file, &settings.file_retention_seconds.position, message);
    }
    for (_, limit, range) in settings.limits.each() {
        if !range.contains(&limit.value) {
            d.at(settings_file, &limit.position, format!("must be between {} and {}", range.start(), range.end()));
        }
    }
    if let Some(default) = &project.settings.default_pipeline {
        let file_exists = project.root.join(super::PIPELINES_DIR).join(format!("{}.yaml", default.value)).exists();
        if project.pipeline(&default.value).is_none() && !file_exists {
            d.at(settings_file, &default.position, format!("no pipeline named `{}` in pipelines/", default.value));
        }
    }
    for pipeline in &project.pipelines {
        self::pipeline(pipeline, d);
    }
}

fn pipeline(pipeline: &Pipeline, d: &mut Diagnostics) {
    let file = pipeline.file.as_path();
    // A source with a column that failed to parse lost it: checking the source would report the
    // column as missing. Its checks wait until it parses.
    for source in pipeline.sources.iter().filter(|s| s.columns.value.failed == 0) {
        let at = |d: &mut Diagnostics, position: &Position, message: String| d.at(file, position, message);
        if !is_snake_case(&source.name) {
            at(d, &source.columns.position, format!("source name `{}` must be snake_case", source.name));
        }
        source_options(source, file, d);
        columns(source, pipeline, file, d);
    }
    reference_cycles(pipeline, d);
    let retention = &pipeline.retention;
    for rule in [&retention.daily_days, &retention.month_end_months].into_iter().flatten() {
        if rule.value == 0 {
            d.at(file, &rule.position, "must be at least 1 (the newest snapshot is always kept)".to_string());
        }
    }
    if let (None, Some(months)) = (&retention.daily_days, &retention.month_end_months) {
        d.at(file, &months.position, "needs `daily_days`: without it every snapshot is kept".to_string());
    }
    models(pipeline, d);
}

fn models(pipeline: &Pipeline, d: &mut Diagnostics) {
    let at_model = |d: &mut Diagnostics, model: &crate::config::Model, message: String| {
        d.at(&model.file, &Position { line: 0, column: 0, path: String::new() }, message)
    };
    for model in &pipeline.models {
        if !is_snake_case(&model.name) {
            at_model(d, model, format!("model name `{}` (the file name) must be snake_case", model.name));
        }
        if pipeline.source(&model.name).is_some() {
            at_model(d, model, format!("model `{}` has the name of a source", model.name));
        }
        if model.materialized == Materialized::Mart && model.key.is_empty() {
            at_model(d, model, format!("mart `{}` needs a key (its rows are sorted by it)", model.name));
        }
        if model.materialized == Materialized::Incremental && model.key.is_empty() {
            at_model(
                d,
                model,
                format!("incremental model `{}` needs a key (the columns it is recomputed by)", model.name),
            );
        }
        for test in &model.tests {
            if let TestKind::Relationships { to_table, .. } = &test.kind
                && pipeline.model(to_table).is_none()
                && pipeline.source(to_table).is_none()
            {
                at_model(d, model, format!("test {}: no model or source `{to_table}`", test.kind));
            }
        }
    }
}

fn source_options(source: &SourceContract, file: &Path, d: &mut Diagnostics) {
    let sample_date = chrono::NaiveDate::from_ymd_opt(2024, 1, 31).expect("valid date");
    match expand_as_of(&source.path.value, sample_date) {
        Ok(expanded) => {
            if let Err(e) = glob::Pattern::new(&expanded) {
                d.at(file, &source.path.position, format!("not a valid glob: {e}"));
            }
        }
        Err(e) => d.at(file, &source.path.position, e),
    }
    if source.path.value.starts_with('/') || source.path.value.contains("..") {
        d.at(file, &source.path.position, "must be relative to the landing root (no leading `/`, no `..`)");
    }
    if let Some(csv) = &source.csv {
        if source.format != FileFormat::Csv {
            d.at(file, &csv.position, format!("csv options given for a {} source", source.format));
        }
        for (what, value) in [("delimiter", &csv.value.delimiter), ("quote", &csv.value.quote)] {
            if value.len() != 1 || !value.is_ascii() {
                d.at(file, &csv.position, format!("{what} must be one ASCII character, not `{value}`"));
            }
        }
    }
    if let Some(xlsx) = &source.xlsx
        && source.format != FileFormat::Xlsx
    {
        d.at(file, &xlsx.position, format!("xlsx options given for a {} source", source.format));
    }
    let values = &source.values;
    for formats in [&values.date_formats, &values.timestamp_formats] {
        for format in &formats.value {
            if let Err(e) = check_chrono_format(format) {
                d.at(file, &formats.position, e);
            }
        }
    }
    if let Some(tz) = &values.timezone
        && super::contract::parse_offset(&tz.value).is_none()
    {
        d.at(file, &tz.position, format!("`{}` is not an offset such as +08:00 or Z", tz.value));
    }
    if let Some(sep) = &values.thousands_separator
        && (sep.value.chars().count() != 1 || sep.value == "." || sep.value.chars().any(|c| c.is_ascii_digit()))
    {
        d.at(file, &sep.position, format!("`{}` must be one character other than a digit or `.`", sep.value));
    }
    if let Some(ratio) = &source.max_reject_ratio
        && !(0.0..=1.0).contains(&ratio.value)
    {
        d.at(file, &ratio.position, "must be between 0 and 1");
    }
    if source.load == LoadMode::Incremental && source.primary_key.value.is_empty() {
        d.at(
            file,
            &source.columns.position,
            "an incremental source needs a primary_key to keep the latest version of each row",
        );
    }
}

fn columns(source: &SourceContract, pipeline: &Pipeline, file: &Path, d: &mut Diagnostics) {
    if source.columns.value.entries.is_empty() {
        d.at(file, &source.columns.position, "a source needs at least one column");
    }
    let mut names = HashSet::new();
    let mut field_names = HashSet::new();
    for column in &source.columns.value.entries {
        let (c, position) = (&column.value, &column.position);
        if !is_snake_case(&c.name) {
            d.at(file, position, format!("column name `{}` must be snake_case", c.name));
        }
        if !names.insert(c.name.as_str()) {
            d.at(file, position, format!("column `{}` is declared twice", c.name));
        }
        if !field_names.insert(c.field_name()) {
            d.at(file, position, format!("field `{}` is read by two columns", c.field_name()));
        }
        if let Some(values) = &c.accepted_values
            && c.data_type != ColumnType::String
        {
            d.at(
                file,
                &values.position,
                format!("accepted_values needs a string column, `{}` is {}", c.name, c.data_type),
            );
        }
        for bound in [&c.min, &c.max].into_iter().flatten() {
            if !c.data_type.is_numeric() {
                d.at(
                    file,
                    &bound.position,
                    format!("min/max need an int or decimal column, `{}` is {}", c.name, c.data_type),
                );
            }
        }
        if let Some(reference) = &c.references {
            match pipeline.source(&reference.value.source) {
                None => {
                    d.at(file, &reference.position, format!("no source `{}` in this pipeline", reference.value.source))
                }
                Some(target) => match target.column(&reference.value.column) {
                    None => d.at(
                        file,
                        &reference.position,
                        format!("source `{}` has no column `{}`", target.name, reference.value.column),
                    ),
                    Some(_) if target.primary_key.value != [reference.value.column.clone()] => d.at(
                        file,
                        &reference.position,
                        format!("`{}` must be the whole primary key of `{}`", reference.value.column, target.name),
                    ),
                    Some(_) => {}
                },
            }
        }
    }
    for key in &source.primary_key.value {
        match source.column(key) {
            None => d.at(file, &source.primary_key.position, format!("primary key column `{key}` is not declared")),
            Some(c) if c.nullable => d.at(
                file,
                &source.primary_key.position,
                format!("primary key column `{key}` must not be nullable (set nullable: false)"),
            ),
            Some(_) => {}
        }
    }
}

fn reference_cycles(pipeline: &Pipeline, d: &mut Diagnostics) {
    let ordered = pipeline.sources_in_reference_order();
    let mut seen: HashSet<&str> = HashSet::new();
    for source in ordered {
        let waits_on_later =
            source.referenced_sources().any(|r| r != source.name && !seen.contains(r) && pipeline.source(r).is_some());
        if waits_on_later {
            d.at(
                &pipeline.file,
                &source.columns.position,
                format!("references between sources form a cycle through `{}`", source.name),
            );
        }
        seen.insert(&source.name);
    }
}

fn is_snake_case(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}
