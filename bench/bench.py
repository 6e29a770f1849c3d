"""The nightly build at scale, keymart against DuckDB, with DuckDB as the oracle of the raw loads
and the SQL marts.

    python3 bench/bench.py --scale 1m [--scale 5m] [--runs 3] [--work /tmp/keymart-bench] [--fit]

Per scale: generate two days of extracts (the first carries a year of history), then, taking
turns run by run (--runs times each):
  keymart  the full build (`run` of the first day: ingest + every mart, tests, publish) and the
           incremental night (`run` of the next day), release build;
  DuckDB   the same two nights (bench/duckdb/night.py: the extracts to Parquet, then the pipeline's
           SQL), in a virtualenv with bench/requirements.txt (made under --work on first use);
then every raw load and every SQL mart of both nights is compared row by row
(bench/duckdb/compare.py) and any difference fails the bench. Prints wall time and peak RSS (/usr/bin/time -v) of each side, the
ratios, order lines per second and, across scales, the ratio of time per order line.
--fit also times the model fits against scipy (bench/fit.py) on the scale's customer history.

Scales (customers; about 9.4 order lines per customer over a year with the generator's defaults):
smoke 2k, 100k, 1m, 5m.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
SCALES = {"smoke": 2_000, "100k": 100_000, "1m": 1_000_000, "5m": 5_000_000}
NIGHTS = ("2024-12-31", "2025-01-01")  # the full build, then the incremental night
PYTHON_MODULES = "duckdb, numpy, openpyxl, pyarrow, scipy, yaml"


def fail(message):
    sys.exit(f"bench: {message}")


def timed(command, **kwargs):
    """Run under /usr/bin/time -v: (wall seconds, peak RSS in MB, stdout). What earlier runs
    left to write back is written first, so it does not slow this run's writes."""
    os.sync()
    started = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-v", *map(str, command)], capture_output=True, text=True, **kwargs)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        fail(f"failed ({result.returncode}): {' '.join(map(str, command))}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return seconds, peak_kb / 1024, result.stdout


def warm(roots, day):
    """Read every file under `roots` (those of later days aside) so that the timed command finds
    its inputs in the page cache, whatever ran before it. The benchmark machine reads its disk
    slowly and pages out what has not been touched for a minute (BENCHMARKS.md, "The machine"):
    a build whose extracts had gone cold would measure the disk, not the engine."""
    for root in filter(Path.exists, roots):
        for path in sorted(root.rglob("*")):
            dates = re.findall(r"\d{4}-\d{2}-\d{2}", str(path.relative_to(root)))
            if path.is_file() and all(d <= day for d in dates):
                with open(path, "rb") as f:
                    while f.read(1 << 24):
                        pass


def virtualenv(folder):
    """The bench's Python, with its pinned requirements (installed on first use)."""
    python = folder / "bin/python"
    if python.exists() and subprocess.run([python, "-c", f"import {PYTHON_MODULES}"], capture_output=True).returncode == 0:
        return python
    print(f"installing bench/requirements.txt into {folder}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", folder], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", "-r", BENCH / "requirements.txt"], check=True)
    return python


def project(work):
    """A fresh project folder with the repository's configuration and SQL."""
    root = work / "project"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for item in ("keymart.yaml", "pipelines", "sql"):
        source = REPO / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / item)
    return root


def order_lines(landing, day):
    """Order lines in the generator's extract of `day`, from its manifest."""
    manifest = json.loads((landing / "_manifest.json").read_text())
    return sum(e["expected"]["rows"] for e in manifest["extracts"] if e["source"] == "erp_orders" and e["date"] == day)


def median(samples):
    """(median seconds, peak MB) of (seconds, MB, …) samples."""
    return statistics.median(s[0] for s in samples), max(s[1] for s in samples)


def bench_scale(scale, args, keymart, python):
    work = args.work / scale
    work.mkdir(parents=True, exist_ok=True)
    root = project(work)
    warehouse = root / "warehouse"
    landing = warehouse / "landing"
    customers = SCALES[scale]
    seconds, rss, _ = timed([keymart, "--project", root, "-q", "generate", "--customers", customers, "--days", len(NIGHTS),
                             "--history-days", "364", "--start", NIGHTS[0], "--seed", "7", "--out", landing])
    lines = {day: order_lines(landing, day) for day in NIGHTS}
    print(f"[{scale}] generated {customers:,} customers in {seconds:.1f} s: {lines[NIGHTS[0]]:,} order lines in the "
          f"first extract (a year), {lines[NIGHTS[1]]:,} the next day", flush=True)

    # DuckDB reads the extracts it cannot decode prepared outside its timing; its marts read the
    # raw Parquet and snapshots keymart left from its last run (night.py says why).
    prepared = work / "duckdb/prepared"
    for day in NIGHTS:
        subprocess.run([python, BENCH / "duckdb/prepare.py", "--landing", landing, "--day", day, "--out", prepared], check=True)
    # The two sides take turns, run by run, so a machine whose speed drifts during the sitting
    # (BENCHMARKS.md, "The machine") weighs on both alike.
    keymart_nights = {day: [] for day in NIGHTS}
    duckdb_nights = {day: [] for day in NIGHTS}
    for _ in range(args.runs):
        for folder in ("raw", "rejects", "marts", "_runs", "_staging", "state"):
            shutil.rmtree(warehouse / folder, ignore_errors=True)
        (warehouse / "_lock").unlink(missing_ok=True)
        for day in NIGHTS:
            warm([warehouse], day)
            keymart_nights[day].append(timed([keymart, "--project", root, "-q", "run", "--as-of", day]))
        for day in NIGHTS:
            out = work / "duckdb" / day
            shutil.rmtree(out, ignore_errors=True)
            warm([prepared, warehouse / "raw", warehouse / "marts"], day)
            duckdb_nights[day].append(timed([python, BENCH / "duckdb/night.py", "--project", root, "--as-of", day,
                                             "--out", out, "--ingest", prepared]))

    print(f"[{scale}] comparing the raw loads and the marts of keymart and DuckDB", flush=True)
    for day in NIGHTS:
        print(f" {day}:", flush=True)
        compared = subprocess.run([python, BENCH / "duckdb/compare.py", "--project", root, "--as-of", day,
                                   "--duckdb", work / "duckdb" / day])
        if compared.returncode != 0:
            fail(f"[{scale}] keymart's and DuckDB's raw loads or marts differ on {day} (above)")
    print(f"[{scale}] the raw loads and the marts agree", flush=True)

    if args.fit:
        history = work / "history.parquet"
        subprocess.run([python, "-c", f"import duckdb; duckdb.sql(\"COPY (SELECT repeat_purchases AS x, weeks_to_last_purchase AS t_x, "
                        f"weeks_observed AS t_cal, mean_repeat_spend AS m FROM "
                        f"read_parquet('{work}/duckdb/{NIGHTS[0]}/marts/customer_value.parquet') "
                        f"WHERE repeat_purchases IS NOT NULL) TO '{history}'\")"], check=True)
        subprocess.run([python, BENCH / "fit.py", "--keymart", keymart, "--history", history, "--project", root, "--runs", str(args.runs)], check=True)

    return {
        "lines": lines[NIGHTS[0]],
        "keymart": median(keymart_nights[NIGHTS[0]]),
        "keymart_incremental": median(keymart_nights[NIGHTS[1]]),
        "duckdb": median(duckdb_nights[NIGHTS[0]]),
        "duckdb_next": median(duckdb_nights[NIGHTS[1]]),
        "duckdb_steps": json.loads(duckdb_nights[NIGHTS[0]][-1][2]),
        "full_builds": {side: [f"{s[0]:.2f}" for s in nights[NIGHTS[0]]]
                        for side, nights in (("keymart", keymart_nights), ("DuckDB", duckdb_nights))},
    }


def report(results, runs):
    print(f"\nmedians of {runs} run(s); peak RSS is the largest of them")
    header = (f"{'scale':>6} {'order lines':>12} | {'keymart s':>9} {'MB':>6} | {'DuckDB s':>9} {'MB':>6} | "
              f"{'time k/D':>8} {'mem k/D':>7} | {'keymart lines/s':>15} {'DuckDB lines/s':>14} | "
              f"{'incr. s':>7} {'incr/full':>9} | {'DuckDB next s':>13}")
    print(header)
    print("-" * len(header))
    for scale, r in results.items():
        (k, k_mb), (d, d_mb), (i, _), (n, _) = r["keymart"], r["duckdb"], r["keymart_incremental"], r["duckdb_next"]
        print(f"{scale:>6} {r['lines']:>12,} | {k:>9.2f} {k_mb:>6.0f} | {d:>9.2f} {d_mb:>6.0f} | {k / d:>8.2f} "
              f"{k_mb / d_mb:>7.2f} | {r['lines'] / k:>15,.0f} {r['lines'] / d:>14,.0f} | {i:>7.2f} {i / k:>9.3f} | {n:>13.2f}")
    scales = list(results)
    for smaller, larger in zip(scales, scales[1:]):
        per_row = {side: (results[larger][side][0] / results[larger]["lines"]) / (results[smaller][side][0] / results[smaller]["lines"])
                   for side in ("keymart", "duckdb")}
        print(f"time per order line, {larger} ÷ {smaller}: keymart {per_row['keymart']:.2f}, DuckDB {per_row['duckdb']:.2f}")
    for scale, r in results.items():
        runs = "; ".join(f"{side} {', '.join(seconds)}" for side, seconds in r["full_builds"].items())
        print(f"full builds at {scale}, in the order they ran (s): {runs}")
        print(f"DuckDB steps at {scale}, first night (s): {r['duckdb_steps']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=SCALES, action="append", help="repeatable; default smoke")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/keymart-bench"))
    parser.add_argument("--venv", type=Path, help="the bench's virtualenv (default: WORK/venv)")
    parser.add_argument("--keymart", help="binary to measure (default: cargo build --release)")
    parser.add_argument("--fit", action="store_true", help="also time the model fits against scipy (bench/fit.py)")
    args = parser.parse_args()

    keymart = args.keymart
    if keymart is None:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
        keymart = str(REPO / "target/release/keymart")
    python = virtualenv((args.venv or args.work / "venv").resolve())
    results = {scale: bench_scale(scale, args, keymart, python) for scale in args.scale or ["smoke"]}
    report(results, args.runs)


if __name__ == "__main__":
    main()
