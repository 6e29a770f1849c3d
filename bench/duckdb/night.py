"""One night of the nightly build in DuckDB: the competitor keymart is timed against, and the
independent oracle its SQL marts are checked against (bench/bench.py runs and compares it).

    python bench/duckdb/night.py --project P --as-of D --out OUT [--ingest PREPARED]

--ingest: the day's extracts to Parquet the way a DuckDB user would write it (explicit column types,
zstd), from PREPARED: the extracts with the GBK customer master re-encoded as UTF-8 and the Excel
contacts as CSV (prepare.py, untimed: DuckDB reads neither GBK nor, offline, Excel).

Marts: the pipeline's models (pipelines/nightly.yaml, the same SQL files) run in DuckDB over the
contract-checked raw Parquet that keymart's ingest wrote, so the comparison isolates the SQL engines.
Sources are the newest version of each key up to the night (a window, where keymart uses an
anti-join); `<mart>_history` is keymart's committed snapshots before the night; model_parameters
is keymart's fit (the fit is checked against scipy by bench/fit.py); the other model functions are
udfs.py. Dialect differences are the rewrites in DIALECT, each with its reason. Marts are written
to OUT/marts/<mart>.parquet. Prints the step timings as JSON.
"""

import argparse
import json
import re
import sys
import time
import urllib.parse
from pathlib import Path

import duckdb
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import udfs  # noqa: E402

# (model, keymart SQL, DuckDB SQL, why). Each must match: a change to the model fails loudly here.
DIALECT = [
    ("stg_customer_purchase_summary", "first_value(net_amount ORDER BY purchase_date)", "arg_min(net_amount, purchase_date)",
     "DuckDB's ordered first value is arg_min(value, ordering)"),
    ("customer_value", "round(CAST(coalesce(c.service_seconds, 0) AS DECIMAL(38, 2)) / 60 * $service_cost_per_minute, 2)",
     "div_round2(coalesce(c.service_seconds, 0) * $service_cost_per_minute, 60)",
     "DuckDB divides decimals in DOUBLE: round(x / 60, 2) would round some exact halves down"),
    ("customer_value", "round(c.revenue / c.order_count, 2)", "div_round2(c.revenue, c.order_count)",
     "the same: 2.01 / 2 rounds to 1.00 in DOUBLE, 1.01 in decimal"),
    *[("customer_rfm", f"ntile_bucket(row_number() OVER (ORDER BY {order}), t.customers, 5)",
       f"ntile(5) OVER (ORDER BY {order})",
       "keymart's ntile_bucket of a row number streams where ntile needs all rows in one batch; DuckDB's "
       "own ntile checks it")
      for order in ("recency_days DESC, customer_id", "frequency, customer_id", "monetary, customer_id")],
]

# num / den rounded to cents, half away from zero, in exact integer arithmetic (den > 0).
DIV_ROUND2 = """CREATE MACRO div_round2(num, den) AS
    sign(num) * ((abs(CAST(num * 100 AS HUGEINT)) * 2 + den) // (2 * den)) * 0.01"""

# keymart's top_values aggregate, re-derived: the n heaviest non-NULL values, ties to the smaller
# value, joined with ", " (NULL when there is none). A list of (-weight, value) sorted per group:
# at 1M customers faster in DuckDB than an ordered list(v ORDER BY w DESC, v) or a row_number window.
# keymart's only_value: the group's one non-NULL value (keymart fails on a second, different one).
ONLY_VALUE = "CREATE MACRO only_value(x) AS any_value(x)"

TOP_VALUES = """CREATE MACRO top_values(v, w, n) AS
    array_to_string(list_transform(list_slice(list_sort(
        list({'w': -w, 'v': v}) FILTER (WHERE v IS NOT NULL AND w IS NOT NULL)), 1, n), lambda x: x.v), ', ')"""

DUCKDB_TYPES = {"string": "VARCHAR", "int": "BIGINT", "float": "DOUBLE", "bool": "BOOLEAN", "date": "DATE",
                "timestamp": "TIMESTAMP"}


def duckdb_type(declared):
    return DUCKDB_TYPES.get(declared) or declared.upper()  # decimal(p,s) is spelled the same


def literal(value, declared=None):
    """A pipeline var or the night as a typed SQL literal (keymart binds them as typed parameters)."""
    if declared:
        return f"CAST('{value}' AS {duckdb_type(declared)})"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"CAST({value!r} AS DOUBLE)"
    return "'" + str(value).replace("'", "''") + "'"


def committed_snapshots(warehouse, mart):
    """{as_of: files} of keymart's committed snapshots of a mart: its Delta log's JSON commits
    replayed in order (files added minus files removed), grouped by the `as_of` partition."""
    table = warehouse / "marts" / mart
    live = {}
    for commit in sorted((table / "_delta_log").glob("*.json")):
        for line in commit.read_text().splitlines():
            action = json.loads(line) if line.strip() else {}
            if "add" in action:
                live[urllib.parse.unquote(action["add"]["path"])] = action["add"]["partitionValues"]["as_of"]
            elif "remove" in action:
                live.pop(urllib.parse.unquote(action["remove"]["path"]), None)
    found = {}
    for path, as_of in sorted(live.items()):
        found.setdefault(as_of, []).append(str(table / path))
    return found


class Night:
    def __init__(self, project, as_of, out):
        self.project = project
        self.warehouse = project / "warehouse"
        self.as_of = as_of
        self.out = out
        self.pipeline = yaml.safe_load((project / "pipelines/nightly.yaml").read_text())
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")  # raw timestamps are UTC; CAST(ts AS DATE) must be too
        self.timings = {}

    def timed(self, step, action):
        started = time.perf_counter()
        action()
        self.timings[step] = round(time.perf_counter() - started, 3)

    # --- ingest: CSV / JSON lines → Parquet -------------------------------------------------------

    def ingest(self, prepared):
        for name, source in self.pipeline["sources"].items():
            self.timed(f"ingest {name}", lambda: self.ingest_source(name, source, prepared))

    def ingest_source(self, name, source, prepared):
        folder = prepared / Path(source["path"].replace("{as_of}", self.as_of)).parent
        columns = "{" + ", ".join(f"'{c['name']}': '{duckdb_type(c['type'])}'" for c in source["columns"]) + "}"
        if source["format"] == "jsonl":
            scan = f"read_json('{folder}/*.jsonl', format = 'newline_delimited', columns = {columns})"
        else:  # csv, and the Excel contacts prepared as CSV
            scan = f"read_csv('{folder}/*.csv', header = true, columns = {columns}, timestampformat = '%Y-%m-%d %H:%M:%S')"
        target = self.out / "raw" / name / f"load_date={self.as_of}"
        target.mkdir(parents=True, exist_ok=True)
        self.con.execute(f"COPY (SELECT * FROM {scan}) TO '{target}/part-0.parquet' (FORMAT parquet, COMPRESSION zstd)")

    # --- marts ------------------------------------------------------------------------------------

    def marts(self):
        udfs.register(self.con)
        self.con.execute(DIV_ROUND2)
        self.con.execute(TOP_VALUES)
        self.con.execute(ONLY_VALUE)
        for name, source in self.pipeline["sources"].items():
            self.register_source(name, source)
        models = {Path(m["path"]).stem: m for m in self.pipeline["models"] if not m["path"].startswith("sql/checks/")}
        for mart in (n for n, m in models.items() if m["materialized"] == "mart"):
            self.register_history(mart)
        texts = {name: self.sql(name, model) for name, model in models.items()}
        for name in self.dependency_order(texts):
            self.timed(name, lambda: self.build(name, models[name], texts[name]))

    def register_source(self, name, source):
        """The newest version of each key loaded up to the night."""
        key = ", ".join(source["primary_key"])
        scan = f"read_parquet('{self.warehouse}/raw/{name}/load_date=*/*.parquet', hive_partitioning = true)"
        self.con.execute(f"""CREATE VIEW {name} AS SELECT * EXCLUDE (newest) FROM (
            SELECT *, row_number() OVER (PARTITION BY {key} ORDER BY load_date DESC) AS newest
            FROM {scan} WHERE load_date <= DATE '{self.as_of}') WHERE newest = 1""")

    def register_history(self, mart):
        snapshots = committed_snapshots(self.warehouse, mart)
        earlier = [f for day, files in snapshots.items() if day < self.as_of for f in files]
        if earlier:
            self.con.execute(f"CREATE VIEW {mart}_history AS SELECT * FROM read_parquet({earlier!r}, union_by_name = true)")
        else:  # the first night: an empty history with the mart's columns
            self.con.execute(f"CREATE VIEW {mart}_history AS SELECT * FROM read_parquet({snapshots[self.as_of]!r}) LIMIT 0")

    def dependency_order(self, texts):
        """The models (name → SQL) in an order where each comes after the models it reads."""
        models = list(texts)
        # A model named in a comment is not read ("-- … for the same reason as stg_x").
        code = {name: re.sub(r"--[^\n]*", "", text) for name, text in texts.items()}
        reads = {name: {other for other in models if other != name and re.search(rf"\b{other}\b", code[name])}
                 for name in texts}
        ordered = []
        while len(ordered) < len(models):
            ready = [n for n in models if n not in ordered and reads[n] <= set(ordered)]
            if not ready:
                sys.exit(f"cycle among {sorted(set(models) - set(ordered))}")
            ordered.extend(ready)
        return ordered

    def sql(self, name, model):
        text = (self.project / model["path"]).read_text()
        for target, keymart_sql, duckdb_sql, _why in DIALECT:
            if target == name:
                if keymart_sql not in text:
                    sys.exit(f"bench/duckdb/night.py DIALECT: {model['path']} no longer contains {keymart_sql!r}")
                text = text.replace(keymart_sql, duckdb_sql)
        return text

    def bind(self, text):
        values = {"as_of": f"DATE '{self.as_of}'"}
        for var, value in self.pipeline.get("vars", {}).items():
            values[var] = literal(value["value"], value["type"]) if isinstance(value, dict) else literal(value)
        return re.sub(r"\$(\w+)", lambda m: values[m.group(1)], text)

    def build(self, name, model, text):
        if name == "model_parameters":
            query = f"SELECT * EXCLUDE (as_of) FROM read_parquet({committed_snapshots(self.warehouse, name)[self.as_of]!r})"
        else:
            query = self.bind(text)
        kind = "VIEW" if model["materialized"] == "view" else "TABLE"
        self.con.execute(f"CREATE {kind} {name} AS {query}")
        if model["materialized"] == "mart":
            target = self.out / "marts"
            target.mkdir(parents=True, exist_ok=True)
            self.con.execute(f"COPY (SELECT DATE '{self.as_of}' AS as_of, * FROM {name}) "
                             f"TO '{target}/{name}.parquet' (FORMAT parquet, COMPRESSION zstd)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--as-of", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ingest", type=Path, metavar="PREPARED")
    args = parser.parse_args()
    night = Night(args.project, args.as_of, args.out)
    if args.ingest:
        night.ingest(args.ingest)
    night.marts()
    print(json.dumps(night.timings))


if __name__ == "__main__":
    main()
