"""A dashboard's queries through `keymart serve` against DuckDB in-process on the same Parquet files:
p50/p95 latency per query and queries per second at 1, 8 and 32 clients, and the server's peak RSS.

    python3 -m venv V && V/bin/pip install -r bench/requirements.txt
    V/bin/python bench/serve_dashboard.py --keymart target/release/keymart --project P \\
        [--seconds 60] [--clients 1,8,32] [--max-concurrent-queries default,32] [--retries 2] [--out F]

BENCHMARKS.md ("keymart serve: a dashboard at 1M customers") ran it with --seconds 50 --retries 3.

P is a keymart project whose warehouse holds committed marts (BENCHMARKS.md measures the 1M
customers' two nights). Nothing is written to it: each server runs on a copy of P's keymart.yaml,
pipelines/ and sql/ in a temporary folder, with `warehouse:` made absolute and, per value of
--max-concurrent-queries, `serve: max_concurrent_queries` set ("default": left unset, i.e. 4).
Every server listens on free loopback ports (no users: loopback only) for the whole run.

DuckDB reads the files the server reads: each mart's Delta log (`_delta_log/*.json`, adds minus
removes) names the committed files; a view per mart over its latest as_of's files and a
`<mart>_history` view over all of them.

1. Each query's rows from every server are compared with DuckDB's (sorted; floats to 1e-9
   relative); any difference, or an error, fails the bench before anything is timed.
2. Then phases, one per (client count, engine), taking turns within each client count: keymart's
   clients are separate processes, one psycopg 3 connection each (autocommit, psycopg's defaults:
   text results, the extended protocol for the bound parameter, server-side prepared statements
   after 5 executions); DuckDB's are threads with a cursor each on one in-process connection. Each
   client runs the query mix round-robin (client i starting at query i) for --seconds; every
   query's latency is the time to execute it and fetch all rows into Python objects.
3. Before each phase the marts' files are read into the page cache and the bench waits until no
   `rustc` runs and the machine is idle (checked every 10 s, up to 30 min); a phase during which a
   rustc ran or other processes used more than --max-other-cpu cores is measured again
   (--retries). It records whether the machine was quiet, and the CPU the engine, the clients and
   other processes used during the phase (the machine's busy time from /proc/stat minus the
   servers' and this bench's with its clients).
4. During each phase the server's VmRSS is sampled every 100 ms (for DuckDB: this bench
   process's); each server's VmHWM is read at the end.
5. A diagnosis at 1 client: per query, DuckDB's execution with and without fetching into Python,
   and keymart's EXPLAIN ANALYZE of it against the query itself, prepared and not.

Prints a plain-text report (also written to --out).
"""

import argparse
import datetime
import decimal
import glob
import math
import multiprocessing as mp
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import duckdb
import psycopg
import yaml

from delta_log import committed_files

# The dashboard. One SQL text per query, run as it is by both engines; $1 is a bound parameter
# (psycopg's RawCursor sends it with the extended protocol; DuckDB binds it in-process).
QUERIES = [
    ("segments",
     "SELECT segment, count(*) AS customers, sum(monetary) AS monetary, "
     "avg(recency_days) AS avg_recency_days "
     "FROM customer_rfm GROUP BY segment ORDER BY customers DESC"),
    ("top100_key_accounts",
     "SELECT k.value_rank, k.customer_id, k.net_value, k.status, c.churn_risk, c.p_alive, c.churn_reasons "
     "FROM key_accounts k JOIN customer_churn c ON c.customer_id = k.customer_id "
     "WHERE k.is_key_account ORDER BY k.value_rank LIMIT 100"),
    ("at_risk_roster",
     "SELECT k.value_rank, k.customer_id, k.net_value, c.p_alive, c.days_since_last_order, "
     "c.overdue_ratio, c.frequency_change, c.recent_complaints, c.churn_reasons "
     "FROM key_accounts k JOIN customer_churn c ON c.customer_id = k.customer_id "
     "WHERE k.status = 'at_risk' ORDER BY k.value_rank"),
    ("migration_matrix",
     "SELECT from_segment, to_segment, customers, probability "
     "FROM segment_migration ORDER BY from_segment, to_segment"),
    ("customer_by_id",
     "SELECT * FROM customer_profile WHERE customer_id = $1"),
    ("value_trend",
     "SELECT as_of, count(*) AS customers, sum(revenue) AS revenue, sum(net_value) AS net_value, "
     "sum(clv) AS clv FROM customer_value_history GROUP BY as_of ORDER BY as_of"),
]
NAMES = [name for name, _ in QUERIES]


def fail(message):
    sys.exit(f"serve_dashboard: FAILED: {message}")


# ---------------------------------------------------------------- the warehouse, by its Delta logs

def project_warehouse(project):
    with open(os.path.join(project, "keymart.yaml"), encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    warehouse = os.environ.get("KEYMART_WAREHOUSE") or config.get("warehouse", "./warehouse")
    if "://" in warehouse:
        fail(f"the warehouse must be a local path for DuckDB to read the same files: {warehouse}")
    return config, os.path.normpath(os.path.join(project, warehouse))


def duckdb_connection(warehouse):
    """An in-process DuckDB with a view per mart (latest as_of) and per `<mart>_history`, over the
    files the marts' Delta logs name. Returns (connection, {mart: {as_of: [files]}})."""
    con = duckdb.connect()
    marts = {}
    for table in sorted(glob.glob(os.path.join(warehouse, "marts", "*"))):
        if not os.path.isdir(os.path.join(table, "_delta_log")):
            continue
        by_day = {}
        for path, day in committed_files(table).items():
            by_day.setdefault(day, []).append(path)
        if not by_day:
            continue
        mart = os.path.basename(table)
        marts[mart] = {day: sorted(paths) for day, paths in sorted(by_day.items())}

        def select(day, paths):
            files = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
            reader = f"read_parquet({files}, hive_partitioning = false)"
            names = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()]
            return f"SELECT * FROM {reader}" if "as_of" in names else f"SELECT DATE '{day}' AS as_of, * FROM {reader}"

        latest = max(marts[mart])
        con.execute(f"CREATE VIEW {mart} AS {select(latest, marts[mart][latest])}")
        con.execute(f"CREATE VIEW {mart}_history AS " + " UNION ALL ".join(select(d, p) for d, p in marts[mart].items()))
    return con, marts


def warm(marts):
    """Read every committed file into the page cache (the VM pages out what was not touched for
    about a minute: BENCHMARKS.md, "The machine")."""
    for days in marts.values():
        for paths in days.values():
            for path in paths:
                with open(path, "rb") as f:
                    while f.read(1 << 24):
                        pass


# ---------------------------------------------------------------- servers

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`keymart serve` on a copy of the project's settings, on free loopback ports."""

    def __init__(self, keymart, project, config, warehouse, max_concurrent, workdir):
        self.label = f"keymart mcq={max_concurrent}"
        self.max_concurrent = max_concurrent
        folder = os.path.join(workdir, f"project-mcq-{max_concurrent}")
        os.makedirs(folder)
        for sub in ("pipelines", "sql"):
            if os.path.isdir(os.path.join(project, sub)):
                shutil.copytree(os.path.join(project, sub), os.path.join(folder, sub))
        config = dict(config, warehouse=warehouse)
        if max_concurrent != "default":
            config["serve"] = dict(config.get("serve") or {}, max_concurrent_queries=int(max_concurrent))
        with open(os.path.join(folder, "keymart.yaml"), "w", encoding="utf-8") as f:
            yaml.safe_dump(config, f, sort_keys=False, allow_unicode=True)
        self.port, self.http = free_port(), free_port()
        self.log = open(os.path.join(workdir, f"serve-mcq-{max_concurrent}.log"), "w")
        env = {k: v for k, v in os.environ.items() if k != "KEYMART_WAREHOUSE"}
        self.command = [keymart, "--project", folder, "serve", "--pg", f"127.0.0.1:{self.port}",
                        "--http", f"127.0.0.1:{self.http}"]
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.pid = self.process.pid
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                fail(f"{self.label} exited with {self.process.returncode}; log: {self.log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                fail(f"{self.label} not healthy after 120 s; log: {self.log.name}")
            time.sleep(0.2)

    def dsn(self):
        return f"host=127.0.0.1 port={self.port} dbname=keymart user=bench"

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


# ---------------------------------------------------------------- /proc

def proc_status(pid, field):
    """A VmRSS-like field of /proc/PID/status in bytes, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def proc_cpu_seconds(pid, children=False):
    """utime + stime of a process (and, with children, of its reaped children) in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds():
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def rustc_running():
    return subprocess.run(["pgrep", "-x", "rustc"], capture_output=True).returncode == 0


def busy_cores(seconds=2.0):
    """Cores the whole machine kept busy over `seconds` (the bench and the servers idle meanwhile)."""
    busy, started = machine_busy_seconds(), time.monotonic()
    time.sleep(seconds)
    return (machine_busy_seconds() - busy) / (time.monotonic() - started)


def wait_quiet(log, max_other_cpu):
    """Wait until no rustc runs and the machine is idle (below max_other_cpu cores over 2 s), checking
    every 10 s, up to 30 min: (quiet at the start, seconds waited)."""
    started, waited = time.monotonic(), 0.0
    while rustc_running() or busy_cores() > max_other_cpu:
        if time.monotonic() - started > 1800:
            log("  rustc or other work still running after 30 min: measuring anyway (NOT quiet)")
            return False, time.monotonic() - started
        time.sleep(10)
        waited = time.monotonic() - started
    if waited:
        log(f"  waited {waited:.0f} s for rustc (or other work) to end")
    return True, waited


class Sampler(threading.Thread):
    """VmRSS of one process every 100 ms (the maximum), and whether a rustc ran, every second."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.rustc_seen, self.stop_event = pid, 0, False, threading.Event()

    def run(self):
        tick = 0
        while not self.stop_event.is_set():
            rss = proc_status(self.pid, "VmRSS")
            if rss:
                self.peak = max(self.peak, rss)
            if tick % 10 == 0 and not self.rustc_seen:
                self.rustc_seen = rustc_running()
            tick += 1
            self.stop_event.wait(0.1)

    def stop(self):
        self.stop_event.set()
        self.join()


# ---------------------------------------------------------------- clients

def keymart_client(dsn, offset, seconds, customer_id, prepare_threshold, barrier, results):
    """One dashboard client in its own process: a psycopg connection running the mix round-robin."""
    try:
        conn = psycopg.connect(dsn, autocommit=True, cursor_factory=psycopg.RawCursor,
                               prepare_threshold=prepare_threshold)
    except Exception as e:  # noqa: BLE001 — reported by the parent
        barrier.wait()
        results.put(("error", f"connect: {e}"))
        return
    barrier.wait()
    timings, errors = [], []
    deadline = time.monotonic() + seconds
    i = offset
    while time.monotonic() < deadline:
        name, sql = QUERIES[i % len(QUERIES)]
        params = (customer_id,) if "$1" in sql else None
        started = time.monotonic()
        try:
            conn.execute(sql, params).fetchall()
            timings.append((name, started, time.monotonic() - started))
        except Exception as e:  # noqa: BLE001 — counted and reported
            errors.append((name, f"{type(e).__name__}: {e}".strip()))
        i += 1
    conn.close()
    results.put(("ok", timings, errors))


def run_keymart_phase(server, clients, seconds, customer_id, prepare_threshold):
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(clients + 1), ctx.Queue()
    processes = [ctx.Process(target=keymart_client,
                             args=(server.dsn(), i, seconds, customer_id, prepare_threshold, barrier, results))
                 for i in range(clients)]
    for p in processes:
        p.start()
    barrier.wait()  # every client connected
    started = time.monotonic()
    collected = [results.get(timeout=seconds + 600) for _ in processes]
    for p in processes:
        p.join()
    timings, errors = [], []
    for item in collected:
        if item[0] == "error":
            errors.append(("connect", item[1]))
        else:
            timings += item[1]
            errors += item[2]
    return started, timings, errors


def run_duckdb_phase(con, clients, seconds, customer_id):
    barrier = threading.Barrier(clients + 1)
    out = [None] * clients

    def client(index):
        cursor = con.cursor()
        barrier.wait()
        timings, errors = [], []
        deadline = time.monotonic() + seconds
        i = index
        while time.monotonic() < deadline:
            name, sql = QUERIES[i % len(QUERIES)]
            started = time.monotonic()
            try:
                (cursor.execute(sql, [customer_id]) if "$1" in sql else cursor.execute(sql)).fetchall()
                timings.append((name, started, time.monotonic() - started))
            except Exception as e:  # noqa: BLE001
                errors.append((name, f"{type(e).__name__}: {e}"))
            i += 1
        cursor.close()
        out[index] = (timings, errors)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.monotonic()
    for t in threads:
        t.join()
    return started, [x for t, _ in out for x in t], [x for _, e in out for x in e]


def measure_phase(engine, n, servers, con, marts, args, prepare_threshold, log):
    """One measured phase on a quiet machine; its summary."""
    warm(marts)
    quiet, waited = wait_quiet(log, args.max_other_cpu)
    pid = os.getpid() if engine == "duckdb" else engine.pid
    rss_before = proc_status(pid, "VmRSS")
    sampler = Sampler(pid)
    sampler.start()
    server_cpu = {s.pid: proc_cpu_seconds(s.pid) for s in servers}
    own_cpu = proc_cpu_seconds(os.getpid(), children=True)
    busy, wall = machine_busy_seconds(), time.monotonic()
    load = os.getloadavg()[0]
    if engine == "duckdb":
        started, timings, errors = run_duckdb_phase(con, n, args.seconds, args.customer_id)
    else:
        started, timings, errors = run_keymart_phase(engine, n, args.seconds, args.customer_id, prepare_threshold)
    wall = time.monotonic() - wall
    busy = machine_busy_seconds() - busy
    server_cpu = {p: proc_cpu_seconds(p) - c for p, c in server_cpu.items()}
    own_cpu = proc_cpu_seconds(os.getpid(), children=True) - own_cpu
    sampler.stop()
    summary = summarise(started, timings)
    engine_cpu = own_cpu if engine == "duckdb" else server_cpu[pid]
    other_cpu = max(0.0, busy - own_cpu - sum(server_cpu.values())) / wall
    summary.update(
        errors=errors, quiet=quiet and not sampler.rustc_seen and other_cpu <= args.max_other_cpu, waited=waited, rustc_seen=sampler.rustc_seen,
        other_cpu=other_cpu,
        engine_cpu=engine_cpu / wall,  # DuckDB: the bench process (its Python threads included)
        client_cpu=(own_cpu if engine != "duckdb" else 0.0) / wall,  # keymart: the client processes (and the bench)
        load=load, rss_before=rss_before, rss_peak=sampler.peak, rss_after=proc_status(pid, "VmRSS"),
    )
    log(f"  {summary['count']} queries, {summary['qps']:.1f} q/s, {len(errors)} errors; CPU in cores: "
        f"{'server' if engine != 'duckdb' else 'DuckDB+Python'} {summary['engine_cpu']:.2f}"
        + (f", psycopg clients {summary['client_cpu']:.2f}" if engine != "duckdb" else "")
        + f", others {summary['other_cpu']:.2f}; rustc during phase: {'yes' if sampler.rustc_seen else 'no'}; "
        f"RSS {summary['rss_before'] / 2**20:.0f} → peak {summary['rss_peak'] / 2**20:.0f} MB")
    for name, message in errors[:3]:
        log(f"  error in {name}: {message}")
    return summary


# ---------------------------------------------------------------- results check

def normalise(value):
    if isinstance(value, decimal.Decimal):
        return float(value) if not value.is_finite() or value != value.to_integral_value() else int(value)
    return value


def same(a, b):
    a, b = normalise(a), normalise(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        if isinstance(a, int) and isinstance(b, int):
            return a == b
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def sort_key(row):
    # floats and decimals may differ in their last digits between engines: sort on the rest
    return tuple((v is None, "" if isinstance(v, (float, decimal.Decimal)) else str(v)) for v in row)


def compare(name, columns_a, rows_a, columns_b, rows_b):
    """None when equal, else what differs."""
    if columns_a != columns_b:
        return f"columns differ: {columns_a} vs {columns_b}"
    if len(rows_a) != len(rows_b):
        return f"{len(rows_a)} rows vs {len(rows_b)}"
    for ra, rb in zip(sorted(rows_a, key=sort_key), sorted(rows_b, key=sort_key)):
        if len(ra) != len(rb) or not all(same(x, y) for x, y in zip(ra, rb)):
            return f"first differing row:\n      keymart {ra}\n      DuckDB  {rb}"
    return None


def check_results(servers, con, customer_id, log):
    log("Results check (each query once through every server and DuckDB; sorted, floats to 1e-9 relative):")
    cursor = con.cursor()
    failures = 0
    for name, sql in QUERIES:
        params = [customer_id] if "$1" in sql else None
        result = cursor.execute(sql, params) if params else cursor.execute(sql)
        d_columns = [d[0] for d in result.description]
        d_rows = result.fetchall()
        if name == "customer_by_id" and len(d_rows) != 1:
            fail(f"customer {customer_id} gives {len(d_rows)} rows in DuckDB: pick one that exists (--customer-id)")
        for server in servers:
            with psycopg.connect(server.dsn(), autocommit=True, cursor_factory=psycopg.RawCursor) as conn:
                try:
                    cur = conn.execute(sql, tuple(params) if params else None)
                    k_columns, k_rows = [d.name for d in cur.description], cur.fetchall()
                except psycopg.Error as e:
                    log(f"  {name:20} {server.label}: ERROR {e.sqlstate}: {e}")
                    failures += 1
                    continue
            difference = compare(name, k_columns, k_rows, d_columns, d_rows)
            if difference:
                log(f"  {name:20} {server.label}: DIFFERS from DuckDB: {difference}")
                failures += 1
            else:
                log(f"  {name:20} {server.label}: equal ({len(k_rows)} rows)")
    cursor.close()
    if failures:
        fail(f"{failures} results differ or failed: nothing timed")


# ---------------------------------------------------------------- diagnosis

def diagnose(server, con, customer_id, runs, log):
    """Where a query's time goes, one client, medians of `runs` (after one unmeasured run):
    DuckDB executing it (result left in DuckDB) and also fetching it into Python; keymart's
    EXPLAIN ANALYZE of it (planned and executed in the server, only the plan text sent back) and
    the query fetched into Python, with psycopg's prepared statements (its default) and without."""

    def median_ms(run):
        run()
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            run()
            samples.append(time.perf_counter() - started)
        return statistics.median(samples) * 1000

    log(f"Diagnosis, 1 client, {server.label}, median of {runs} runs, ms:")
    log(f"{'query':20} {'DuckDB exec':>11} {'+fetchall':>9} {'km EXPLAIN ANALYZE':>18} {'km prepared':>11} "
        f"{'unprepared':>10} {'unprep - EA':>11}")
    cursor = con.cursor()
    prepared = psycopg.connect(server.dsn(), autocommit=True, cursor_factory=psycopg.RawCursor, prepare_threshold=0)
    plain = psycopg.connect(server.dsn(), autocommit=True, cursor_factory=psycopg.RawCursor, prepare_threshold=None)
    for name, sql in QUERIES + [("SELECT 1", "SELECT 1")]:
        params = [customer_id] if "$1" in sql else None
        literal = sql.replace("$1", "'" + customer_id.replace("'", "''") + "'")
        d_exec = median_ms(lambda: cursor.execute(sql, params) if params else cursor.execute(sql))
        d_fetch = median_ms(lambda: (cursor.execute(sql, params) if params else cursor.execute(sql)).fetchall())
        k_explain = median_ms(lambda: plain.execute("EXPLAIN ANALYZE " + literal).fetchall()) if name != "SELECT 1" else None
        k_prepared = median_ms(lambda: prepared.execute(sql, tuple(params) if params else None).fetchall())
        k_plain = median_ms(lambda: plain.execute(sql, tuple(params) if params else None).fetchall())
        log(f"{name:20} {d_exec:11.1f} {d_fetch:9.1f} {ms(k_explain and k_explain / 1000):>18} {k_prepared:11.1f} "
            f"{k_plain:10.1f} {ms(k_explain and (k_plain - k_explain) / 1000):>11}")
    prepared.close()
    plain.close()
    cursor.close()


# ---------------------------------------------------------------- report

def percentile(values, q):
    """Nearest-rank percentile."""
    values = sorted(values)
    return values[max(0, math.ceil(q / 100 * len(values)) - 1)]


def summarise(started, timings):
    by_query = {name: [t[2] for t in timings if t[0] == name] for name in NAMES}
    ended = max((s + d for _, s, d in timings), default=started)
    return {
        "per_query": {name: (percentile(v, 50), percentile(v, 95), len(v)) if v else None for name, v in by_query.items()},
        "count": len(timings),
        "qps": len(timings) / (ended - started) if ended > started else 0.0,
    }


def ms(seconds):
    return f"{seconds * 1000:.1f}" if seconds is not None else "-"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keymart", required=True, help="the keymart binary (release build)")
    parser.add_argument("--project", required=True, help="a keymart project with committed marts (read only)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each measured phase")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--max-concurrent-queries", default="default,32",
                        help="one server per value; 'default' leaves serve.max_concurrent_queries unset (4)")
    parser.add_argument("--customer-id", default="C0500000", help="the customer of the by-id query")
    parser.add_argument("--prepare-threshold", type=int, default=5,
                        help="psycopg's prepare_threshold (its default 5; -1: never prepare)")
    parser.add_argument("--retries", type=int, default=2,
                        help="a phase that was not quiet is measured again, this many times at most")
    parser.add_argument("--max-other-cpu", type=float, default=0.25,
                        help="quiet: no rustc and other processes below this many cores (before and during a phase)")
    parser.add_argument("--diagnose-runs", type=int, default=15,
                        help="runs per query of the diagnosis after the phases (0: none)")
    parser.add_argument("--out", help="also write the report to this file")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    settings = args.max_concurrent_queries.split(",")
    prepare_threshold = None if args.prepare_threshold < 0 else args.prepare_threshold
    lines = []

    def log(text=""):
        print(text, flush=True)
        lines.append(text)

    keymart = os.path.abspath(args.keymart)
    project = os.path.abspath(args.project)
    config, warehouse = project_warehouse(project)
    workdir = tempfile.mkdtemp(prefix="serve-dashboard-")
    command = " ".join([sys.executable, *sys.argv])
    log("keymart serve: a dashboard at 1M customers (bench/serve_dashboard.py)")
    log(f"date          {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    log(f"command       {command}")
    log(f"binary        {keymart} ({subprocess.run([keymart, '--version'], capture_output=True, text=True).stdout.strip()})")
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?')
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    log(f"machine       {os.cpu_count()} CPUs ({cpu}), {memory:.1f} GiB, {platform.system()} {platform.release()}")
    log(f"python        {platform.python_version()}, duckdb {duckdb.__version__}, psycopg {psycopg.__version__} "
        f"({psycopg.pq.__impl__}, libpq {psycopg.pq.version()})")
    log(f"warehouse     {warehouse}")

    con, marts = duckdb_connection(warehouse)
    for mart, days in marts.items():
        log(f"  {mart:22} as_of {', '.join(days)} (latest {max(days)}; {sum(map(len, days.values()))} files)")
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    log(f"DuckDB        in-process, threads = {threads}, "
        f"views over the files the Delta logs name")
    log(f"phase length  {args.seconds:g} s; psycopg prepare_threshold {prepare_threshold}; customer {args.customer_id}")
    log()
    log("Queries:")
    for name, sql in QUERIES:
        log(f"  {name:20} {sql}")
    log()

    warm(marts)
    servers = []
    try:
        for setting in settings:
            servers.append(Server(keymart, project, config, warehouse, setting, workdir))
            log(f"started {servers[-1].label}: pid {servers[-1].pid}, pg 127.0.0.1:{servers[-1].port}; "
                f"{' '.join(servers[-1].command)}")
        log()
        check_results(servers, con, args.customer_id, log)
        log()
        # warm-up, not measured: each engine runs the mix twice
        for _ in range(2):
            for server in servers:
                with psycopg.connect(server.dsn(), autocommit=True, cursor_factory=psycopg.RawCursor) as conn:
                    for _, sql in QUERIES:
                        conn.execute(sql, (args.customer_id,) if "$1" in sql else None).fetchall()
            cursor = con.cursor()
            for _, sql in QUERIES:
                (cursor.execute(sql, [args.customer_id]) if "$1" in sql else cursor.execute(sql)).fetchall()
            cursor.close()

        engines = ["duckdb"] + servers
        results, phases = {}, []
        for round_index, n in enumerate(clients):
            order = engines[round_index % len(engines):] + engines[:round_index % len(engines)]
            for engine in order:
                label = "DuckDB" if engine == "duckdb" else engine.label
                for attempt in range(args.retries + 1):
                    log(f"phase: {label}, {n} client(s)" + (f", again ({attempt + 1})" if attempt else ""))
                    summary = measure_phase(engine, n, servers, con, marts, args, prepare_threshold, log)
                    summary["attempt"] = attempt + 1
                    if summary["quiet"]:
                        break
                results[(label, n)] = summary
                phases.append((label, n))
        vmhwm = {s.label: proc_status(s.pid, "VmHWM") for s in servers}
        diagnosis = []
        if args.diagnose_runs > 0:
            log("phase: diagnosis")
            warm(marts)
            quiet, waited = wait_quiet(log, args.max_other_cpu)
            sampler = Sampler(servers[0].pid)
            sampler.start()
            diagnose(servers[0], con, args.customer_id, args.diagnose_runs, diagnosis.append)
            sampler.stop()
            diagnosis.append(f"(machine {'quiet' if quiet and not sampler.rustc_seen else 'NOT QUIET'}: "
                             f"waited {waited:.0f} s, rustc during: {'yes' if sampler.rustc_seen else 'no'})")
    finally:
        for server in servers:
            server.stop()

    labels = ["DuckDB"] + [s.label for s in servers]
    log()
    log("=" * 100)
    log("Latency per query, ms: p50 / p95 (n = queries measured); ratio = keymart p50 ÷ DuckDB p50")
    header = f"{'query':20} {'clients':>7}  " + "  ".join(
        f"{l:>22}" + ("" if l == "DuckDB" else f" {'ratio':>6}") for l in labels)
    log(header)
    log("-" * len(header))
    for name in NAMES:
        for n in clients:
            cells = []
            duck = results[("DuckDB", n)]["per_query"][name]
            for l in labels:
                q = results[(l, n)]["per_query"][name]
                cell = f"{ms(q[0])} / {ms(q[1])} ({q[2]})" if q else "-"
                cells.append(f"{cell:>22}")
                if l != "DuckDB":
                    cells.append(f" {q[0] / duck[0]:6.2f}" if q and duck else f" {'-':>6}")
            log(f"{name:20} {n:>7}  " + "  ".join(cells))
    log()
    log("Throughput, queries per second (all queries of the mix), and errors")
    header = f"{'clients':>7}  " + "  ".join(f"{l:>22}" for l in labels)
    log(header)
    log("-" * len(header))
    for n in clients:
        log(f"{n:>7}  " + "  ".join(
            f"{results[(l, n)]['qps']:>11.1f} q/s, {len(results[(l, n)]['errors']):>2} err" for l in labels))
    log()
    log("Peak RSS per phase, MB (keymart: the server process; DuckDB: this bench process, Python included);"
        " RSS before → peak → after")
    for n in clients:
        log(f"{n:>7}  " + "  ".join(
            f"{results[(l, n)]['rss_before'] / 2**20:>6.0f} → {results[(l, n)]['rss_peak'] / 2**20:>5.0f} → "
            f"{results[(l, n)]['rss_after'] / 2**20:>5.0f}" for l in labels))
    log("VmHWM at the end (each server's peak over the whole run): " + ", ".join(
        f"{l} {v / 2**20:.0f} MB" for l, v in vmhwm.items() if v))
    log()
    log(f"Quiet machine (no rustc before or during the phase, other processes ≤ {args.max_other_cpu:g} cores) and CPU in cores during each phase: the engine (keymart:"
        " the server; DuckDB: the bench process), keymart's psycopg client processes, other processes")
    for l, n in phases:
        r = results[(l, n)]
        log(f"  {l:20} {n:>2} clients: {'quiet' if r['quiet'] else 'NOT QUIET'} (attempt {r['attempt']},"
            f" waited {r['waited']:.0f} s for rustc); engine {r['engine_cpu']:.2f}, clients {r['client_cpu']:.2f},"
            f" others {r['other_cpu']:.2f}")
    log()
    for line in diagnosis:
        log(line)
    if diagnosis:
        log()
    target = all(
        results[(l, 1)]["per_query"][name] and results[("DuckDB", 1)]["per_query"][name]
        and results[(l, 1)]["per_query"][name][0] <= results[("DuckDB", 1)]["per_query"][name][0]
        for l in labels[1:] for name in NAMES) if 1 in clients else None
    log(f"Target p50 of every query ≤ 1.0× DuckDB at 1 client: {'met' if target else 'NOT met'}")
    errors = sum(len(r["errors"]) for r in results.values())
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    shutil.rmtree(workdir, ignore_errors=True)
    if errors:
        fail(f"{errors} queries failed during the phases")


if __name__ == "__main__":
    main()
