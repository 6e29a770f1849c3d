"""Read keymart's mart tables with two readers keymart did not write, and compare them with what
`keymart query --as-of D` printed.

    python readers.py CASES.json

CASES.json is a list of {"table": <table folder>, "as_of": "YYYY-MM-DD", "csv": <keymart's CSV>}.
For each case:

- DuckDB's delta extension (duckdb-extension-delta, loaded from its wheel by path: no network)
  reads the table and keeps the rows of `as_of`;
- this script replays the `_delta_log` JSON commits itself (files added minus files removed, in
  version order), and reads the live files of that partition with pyarrow;
- keymart's CSV is parsed with the column types DuckDB reports.

The three must hold the same rows (as multisets, compared as Python values). Prints one JSON line
per case ({"table", "as_of", "rows"}); exits 1 with the first difference otherwise.
"""

import json
import os
import sys
import urllib.parse

import duckdb
import duckdb_extension_delta
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


def duckdb_connection():
    root = os.path.dirname(duckdb_extension_delta.__file__)
    version = duckdb.__version__
    path = os.path.join(root, "extensions", f"v{version}", "delta.duckdb_extension")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"LOAD '{path}'")
    return con


def by_duckdb(con, table, as_of):
    return con.execute(
        f"SELECT * FROM delta_scan('{table}') WHERE as_of = DATE '{as_of}'"
    ).fetch_arrow_table()


def by_replay(table, as_of):
    """Adds minus removes of the JSON commits, then pyarrow on the files of the partition; a
    column of the table's schema that a file lacks (added after it was written) reads as NULL."""
    log = os.path.join(table, "_delta_log")
    commits = sorted(f for f in os.listdir(log) if f.endswith(".json"))
    versions = [int(f[: -len(".json")]) for f in commits]
    assert versions == list(range(len(versions))), f"{log}: commits are not 0..n: {versions}"
    live = {}
    columns = []
    for name in commits:
        with open(os.path.join(log, name), encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                action = json.loads(line)
                if "add" in action:
                    add = action["add"]
                    live[urllib.parse.unquote(add["path"])] = add["partitionValues"].get("as_of")
                elif "remove" in action:
                    live.pop(urllib.parse.unquote(action["remove"]["path"]), None)
                elif "metaData" in action:
                    schema = json.loads(action["metaData"]["schemaString"])
                    columns = [field["name"] for field in schema["fields"]]
    files = sorted(path for path, day in live.items() if day == as_of)
    tables = [with_columns(pq.read_table(os.path.join(table, path)), columns) for path in files]
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def with_columns(t, columns):
    for name in columns:
        if name not in t.column_names:
            t = t.append_column(name, pa.nulls(t.num_rows))
    return t


def plain(t):
    """Arrow types a CSV reader can be asked for (views as plain strings)."""
    if pa.types.is_string_view(t) or pa.types.is_large_string(t):
        return pa.string()
    return t


def by_keymart(csv, schema):
    types = {f.name: plain(f.type) for f in schema}
    options = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)
    return pacsv.read_csv(csv, convert_options=options)


def rows(table):
    """The rows as a sorted list of {column: Python value}, the columns as keys (order-free). An
    empty string counts as NULL: CSV, keymart's output here, cannot tell them apart."""
    if table is None:
        return []
    records = [{k: (None if v == "" else v) for k, v in r.items()} for r in table.to_pylist()]
    key = lambda r: [(k, r[k] is None, str(r[k])) for k in sorted(r)]
    return sorted(records, key=key)


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    con = duckdb_connection()
    failed = False
    for case in cases:
        table, as_of = case["table"], case["as_of"]
        duck = by_duckdb(con, table, as_of)
        expected = rows(duck)
        for reader, got in [
            ("log replay", rows(by_replay(table, as_of))),
            ("keymart query", rows(by_keymart(case["csv"], duck.schema))),
        ]:
            if got != expected:
                failed = True
                diff = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
                print(
                    json.dumps(
                        {
                            "table": table,
                            "as_of": as_of,
                            "reader": reader,
                            "rows": len(got),
                            "duckdb_rows": len(expected),
                            "first_difference": {
                                "reader": got[diff] if diff < len(got) else None,
                                "duckdb": expected[diff] if diff < len(expected) else None,
                            },
                        },
                        default=str,
                    )
                )
                break
        else:
            print(json.dumps({"table": table, "as_of": as_of, "rows": len(expected)}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
