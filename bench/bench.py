"""The nightly build at scale, timed: generate the extracts, run the full build (ingest + every
mart) with a release keymart, then one more day (the incremental night).

    python3 bench/bench.py --scale 1m [--runs 3] [--work /tmp/keymart-bench]

Scales (customers; about 9.4 order lines per customer over a year with the generator's defaults):
smoke 2k, 100k, 1m, 5m. The model fits against scipy are bench/fit.py. Still to come (see
BENCHMARKS.md): the same marts in DuckDB and their row-by-row comparison.
"""

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCALES = {"smoke": 2_000, "100k": 100_000, "1m": 1_000_000, "5m": 5_000_000}
FIRST_DAY = "2024-12-31"
NEXT_DAY = "2025-01-01"


def timed(command, **kwargs):
    """Run under /usr/bin/time -v: (wall seconds, peak RSS in MB)."""
    started = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, **kwargs)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return seconds, peak_kb / 1024


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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=SCALES, default="smoke")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/keymart-bench"))
    parser.add_argument("--keymart", help="binary to measure (default: cargo build --release)")
    args = parser.parse_args()

    keymart = args.keymart
    if keymart is None:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
        keymart = str(REPO / "target/release/keymart")
    work = args.work / args.scale
    work.mkdir(parents=True, exist_ok=True)

    customers = SCALES[args.scale]
    root = project(work)
    landing = root / "warehouse/landing"
    seconds, rss = timed([keymart, "--project", str(root), "-q", "generate", "--customers", str(customers), "--days", "2",
                          "--history-days", "364", "--start", FIRST_DAY, "--seed", "7", "--out", str(landing)])
    print(f"generate {customers} customers, 2 days: {seconds:.1f} s, {rss:.0f} MB")

    lines = {day: order_lines(landing, day) for day in (FIRST_DAY, NEXT_DAY)}
    print(f"order lines: {lines[FIRST_DAY]} in the first extract (a year of history), {lines[NEXT_DAY]} the next day")

    full, incremental = [], []
    for _ in range(args.runs):
        full.append(timed([keymart, "--project", str(root), "-q", "run", "--as-of", FIRST_DAY]))
        incremental.append(timed([keymart, "--project", str(root), "-q", "run", "--as-of", NEXT_DAY]))
        # Keep the landing zone for the next run: only the warehouse's own folders go.
        for folder in ("raw", "rejects", "marts", "_runs", "_staging"):
            shutil.rmtree(root / "warehouse" / folder, ignore_errors=True)
        (root / "warehouse/_lock").unlink(missing_ok=True)

    def show(name, samples):
        seconds = statistics.median(s for s, _ in samples)
        rss = max(r for _, r in samples)
        print(f"{name:18} median {seconds:8.2f} s of {[round(s, 2) for s, _ in samples]}, peak RSS {rss:.0f} MB")
        return seconds

    full_s = show("full build", full)
    incremental_s = show("incremental night", incremental)
    print(f"full build: {lines[FIRST_DAY] / full_s:,.0f} order lines/s")
    print(f"incremental ÷ full: {incremental_s / full_s:.3f}")


if __name__ == "__main__":
    main()
