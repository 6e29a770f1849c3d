"""Row-by-row comparison of keymart's night with DuckDB's (night.py): the raw loads, then the marts.

    python bench/duckdb/compare.py --project P --as-of D --duckdb OUT

Raw loads (when DuckDB ingested the night, night.py --ingest): keymart's contract-checked Parquet
of each source's load against DuckDB's typed read of the same extracts — an independent check of
keymart's CSV, JSON-lines, GBK and Excel readers and of its typing (the bench's extracts are
clean, so nothing may be rejected or changed). Timestamps are compared in UTC: keymart stores
them so, DuckDB reads the local time of the source's declared `timezone`.

Marts: rows are matched on the mart's key (pipelines/nightly.yaml); every column is compared: floats to
1e-9 relative, everything else exactly (decimals by value). The model-based columns (udfs.py against
keymart's Rust, two implementations of the same closed forms) get 1e-6: scipy's ₂F₁ and a product
of powers lose digits where keymart works in logarithms. model_parameters is keymart's own fit in
both, so it is not compared here (bench/fit.py checks it against scipy). Exit 1 on any difference.
"""

import argparse
import json
import sys
from pathlib import Path

import duckdb
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from night import committed_snapshots  # noqa: E402

SQL_TOLERANCE = 1e-9
MODEL_TOLERANCE = 1e-6
MODEL_COLUMNS = {"p_alive", "expected_purchases_90d", "expected_purchases", "expected_spend", "clv"}
FLOAT_TYPES = {"DOUBLE", "FLOAT"}
EXAMPLES = 3


def columns(con, view):
    return {name: kind for name, kind, *_ in con.execute(f"DESCRIBE {view}").fetchall()}


def differs(column, kind):
    k, d = f'k."{column}"', f'd."{column}"'
    if kind in FLOAT_TYPES:
        tolerance = MODEL_TOLERANCE if column in MODEL_COLUMNS else SQL_TOLERANCE
        close = f"coalesce(abs({k} - {d}) <= {tolerance} * greatest(abs({k}), abs({d})), false)"
        return f"NOT (({k} IS NULL AND {d} IS NULL) OR {close})"
    return f"{k} IS DISTINCT FROM {d}"


def compare_mart(con, warehouse, duckdb_out, mart, key, as_of):
    """Problems found (empty when the marts agree) and a one-line summary."""
    con.execute(f"CREATE OR REPLACE VIEW k AS SELECT * FROM read_parquet({committed_snapshots(warehouse, mart)[as_of]!r})")
    con.execute(f"CREATE OR REPLACE VIEW d AS SELECT * FROM read_parquet('{duckdb_out / 'marts' / mart}.parquet')")
    return compare_views(con, mart, key)


def utc_offset(timezone):
    """'+08:00' as a DuckDB interval literal of the offset."""
    sign, hours, minutes = timezone[0], int(timezone[1:3]), int(timezone[4:6])
    if sign not in "+-":
        sys.exit(f"compare.py: timezone {timezone!r} is not ±HH:MM")
    return f"INTERVAL ({sign}{hours * 60 + minutes}) MINUTE"


def compare_raw(con, warehouse, duckdb_out, name, source, as_of):
    """Problems and a summary for one source's load of the night. Timestamps of a source with a
    declared timezone are moved to UTC on DuckDB's side (it reads them as local wall times)."""
    loads = sorted(str(f) for f in (warehouse / "raw" / name / f"load_date={as_of}").glob("*.parquet"))
    theirs = duckdb_out / "raw" / name / f"load_date={as_of}" / "part-0.parquet"
    if not loads or not theirs.exists():
        return [f"raw {name}: no load of {as_of} in {'keymart' if not loads else 'DuckDB'}"], f"raw {name}: missing"
    timezone = source.get("values", {}).get("timezone")
    stamps = [c["name"] for c in source["columns"] if c["type"] == "timestamp"]
    to_utc = ", ".join(f'"{c}" - {utc_offset(timezone)} AS "{c}"' for c in stamps) if timezone else ""
    naive = ", ".join(f'CAST("{c}" AS TIMESTAMP) AS "{c}"' for c in stamps)  # the session is in UTC
    scan = "read_parquet({}, hive_partitioning = false)"
    con.execute(f"CREATE OR REPLACE VIEW k AS SELECT * {f'REPLACE ({naive})' if naive else ''} FROM {scan.format(loads)}")
    con.execute(f"CREATE OR REPLACE VIEW d AS SELECT * {f'REPLACE ({to_utc})' if to_utc else ''} FROM {scan.format([str(theirs)])}")
    return compare_views(con, f"raw {name}", source["primary_key"])


def compare_views(con, label, key):
    """Problems found (empty when views k and d agree) and a one-line summary. One pass over the
    join counts the unmatched rows and, per column, the differing rows and the largest relative
    difference; examples are fetched only for the columns that differ."""
    keymart_columns, duckdb_columns = columns(con, "k"), columns(con, "d")
    problems = [f"{label}: column {c} only in {side}" for side, mine, theirs in
                (("keymart", keymart_columns, duckdb_columns), ("DuckDB", duckdb_columns, keymart_columns))
                for c in mine if c not in theirs]
    joined = "FROM k FULL OUTER JOIN d ON " + " AND ".join(f'k."{c}" = d."{c}"' for c in key)
    matched = f'k."{key[0]}" IS NOT NULL AND d."{key[0]}" IS NOT NULL'
    compared = [c for c in keymart_columns if c in duckdb_columns and c not in key]
    floats = [c for c in compared if keymart_columns[c] in FLOAT_TYPES]
    conditions = {c: differs(c, keymart_columns[c] if c in floats else duckdb_columns[c]) for c in compared}
    measures = [f'count(*) FILTER (WHERE d."{key[0]}" IS NULL)', f'count(*) FILTER (WHERE k."{key[0]}" IS NULL)', "count(*)"]
    measures += [f"count(*) FILTER (WHERE {matched} AND {conditions[c]})" for c in compared]
    measures += [f'max(abs(k."{c}" - d."{c}") / nullif(greatest(abs(k."{c}"), abs(d."{c}")), 0))' for c in floats]
    only_keymart, only_duckdb, rows, *found = con.execute(f"SELECT {', '.join(measures)} {joined}").fetchone()
    differing, worst = dict(zip(compared, found)), dict(zip(floats, (w or 0.0 for w in found[len(compared):])))
    if only_keymart or only_duckdb:
        problems.append(f"{label}: {only_keymart} rows only in keymart, {only_duckdb} only in DuckDB")
    keys = ", ".join(f'k."{c}"' for c in key)
    for column in (c for c in compared if differing[c]):
        examples = con.execute(f'SELECT {keys}, k."{column}", d."{column}" {joined} WHERE {matched} '
                               f"AND {conditions[column]} ORDER BY ALL LIMIT {EXAMPLES}").fetchall()
        problems.append(f"{label}.{column}: {differing[column]} rows differ, e.g. (key…, keymart, DuckDB) {examples}")
    summary = f"{label}: {rows} rows, {len(compared)} columns"
    if worst:
        column = max(worst, key=worst.get)
        summary += f", largest relative difference {worst[column]:.1e} ({column})"
    return problems, summary


def compare(project, as_of, duckdb_out):
    pipeline = yaml.safe_load((project / "pipelines/nightly.yaml").read_text())
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    warehouse = project / "warehouse"
    checks = []
    if (duckdb_out / "raw").exists():
        checks += [(compare_raw, name, source) for name, source in pipeline["sources"].items()]
    checks += [(compare_mart, Path(m["path"]).stem, m["key"]) for m in pipeline["models"]
               if m["materialized"] == "mart" and Path(m["path"]).stem != "model_parameters"]
    problems = []
    for check, name, detail in checks:
        found, summary = check(con, warehouse, duckdb_out, name, detail, as_of)
        print(f"  {summary}{'' if not found else ' — DIFFERENT'}")
        problems.extend(found)
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--as-of", required=True)
    parser.add_argument("--duckdb", type=Path, required=True)
    args = parser.parse_args()
    problems = compare(args.project, args.as_of, args.duckdb)
    for problem in problems:
        print(problem, file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
