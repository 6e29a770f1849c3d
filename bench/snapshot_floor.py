"""The floor of an incremental night under DESIGN.md's whole-snapshot rule: the time to rewrite
every committed mart snapshot of one date (read it, write it again as zstd Parquet), once as it is
and once re-sorted by its key, with DataFusion's own Parquet reader and writer.

    pip install datafusion==55.0.0   # the Python package of the engine keymart embeds
    python bench/snapshot_floor.py --warehouse WAREHOUSE --as-of 2024-12-31

Compare the total with a full build's wall time (BENCHMARKS.md, "Snapshot floor of an incremental
night").
"""

import argparse
import glob
import os
import shutil
import tempfile
import time

from datafusion import RuntimeEnvBuilder, SessionConfig, SessionContext

from delta_log import committed_files


def committed_folder(table, as_of):
    """The folder of a mart table's committed files of `as_of`, by the table's Delta log (the JSON
    commits: adds minus removes); None when it has none. Other folders under `as_of=D/` hold files
    of replaced snapshots or killed runs, which no reader sees."""
    live = committed_files(table)
    folders = {os.path.dirname(os.path.relpath(path, table)) for path, day in live.items() if day == as_of}
    if len(folders) > 1:
        raise SystemExit(f"{table}: the snapshot of {as_of} spans several folders: {sorted(folders)}")
    return os.path.join(table, folders.pop()) + "/" if folders else None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", required=True)
    parser.add_argument("--as-of", required=True)
    args = parser.parse_args()
    # keymart's settings: two partitions on this machine, a 1 GiB pool that spills, zstd level 1.
    ctx = SessionContext(SessionConfig().with_target_partitions(2),
                         RuntimeEnvBuilder().with_fair_spill_pool(1 << 30).with_disk_manager_os())
    ctx.sql("SET datafusion.execution.parquet.compression = 'zstd(1)'").collect()
    snapshots = [(os.path.basename(t), committed_folder(t, args.as_of)) for t in sorted(glob.glob(f"{args.warehouse}/marts/*"))]
    snapshots = [(mart, folder) for mart, folder in snapshots if folder]
    if not snapshots:
        raise SystemExit(f"no snapshot of {args.as_of} committed in the tables under {args.warehouse}/marts/")
    out = tempfile.mkdtemp(prefix="snapshot-floor-")
    totals = {"as is": 0.0, "sorted by key": 0.0}
    for mart, folder in snapshots:
        ctx.sql(f"CREATE EXTERNAL TABLE {mart} STORED AS PARQUET LOCATION '{folder}'").collect()
        columns = [f.name for f in ctx.table(mart).schema()]
        key = "customer_id" if "customer_id" in columns else columns[0]
        for label, query in (("as is", f"SELECT * FROM {mart}"), ("sorted by key", f"SELECT * FROM {mart} ORDER BY {key}")):
            started = time.perf_counter()
            ctx.sql(f"COPY ({query}) TO '{out}/{mart}.parquet' STORED AS PARQUET").collect()
            seconds = time.perf_counter() - started
            totals[label] += seconds
            print(f"{mart:22} {label:14} {seconds:6.2f} s", flush=True)
    shutil.rmtree(out)
    print(" ".join(f"total {label}: {seconds:.2f} s;" for label, seconds in totals.items()))


if __name__ == "__main__":
    main()
