"""How many cores a keymart night keeps busy, step by step.

    python3 bench/cores.py [--interval 0.5] -- keymart --project P -q run --as-of 2024-12-31

Runs the command and, every interval, reads its CPU time (utime + stime of the process and its
threads, /proc/PID/stat) to print one line per step of the night's ledger: where the step falls
on the wall clock (each model from its `started_at` in the ledger, the ingest before the first)
and the cores it used on average. A step shorter than the interval
has no sample of its own and shows `-`. Linux only; the command must be keymart itself (not a
wrapper such as /usr/bin/time, whose CPU time is not its child's), and its newest ledger is read
from the warehouse under --project's `warehouse/_runs` unless --ledger names it.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a live process, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def sample(command, interval):
    """Run `command`; return its exit code, start (epoch seconds), wall seconds, CPU seconds and
    (elapsed, cores) samples."""
    process = subprocess.Popen(command)
    start = time.time()
    samples, last_time, last_cpu = [], start, 0.0
    while process.poll() is None:
        time.sleep(interval)
        now = time.time()
        try:
            cpu = cpu_seconds(process.pid)
        except (FileNotFoundError, ProcessLookupError):
            break  # ended between the poll and the read
        samples.append((now - start, (cpu - last_cpu) / (now - last_time)))
        last_time, last_cpu = now, cpu
    return process.wait(), start, time.time() - start, last_cpu, samples


def steps(ledger, wall, start):
    """The night as (name, start, seconds): the ingest first, then each model with its tests.

    A model step's `started_at` places it on the wall clock (`start` is the epoch second the
    command started); marts of one batch run side by side, so their lines overlap and each shows
    the cores of the whole process over its span. Ledgers older than `started_at` lay the models
    end to end back from the end of the run. The ingest is what comes before the first model
    (its loads overlap and carry no start); publishing, a few tenths, is counted in the model
    before it."""
    loads = [f"{s['source']} {s['seconds']:.1f} s" for s in ledger["steps"] if s["step"] == "ingest"]
    models, model = [], None
    for step in ledger["steps"]:
        if step["step"] == "model":
            started = step.get("started_at")
            at = datetime.fromisoformat(started).timestamp() - start if started else None
            model = [step["model"], at, step["seconds"]]
            models.append(model)
        elif step["step"] == "test" and model is not None:
            model[2] += step["seconds"]
    if any(at is None for _, at, _ in models):
        at = wall - sum(seconds for _, _, seconds in models)
        for model in models:
            model[1], at = at, at + model[2]
    first = min((at for _, at, _ in models), default=wall)
    return [("ingest: " + ", ".join(loads), 0.0, first)] + [tuple(m) for m in models]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--ledger", type=Path, help="the run's ledger (default: the newest under --project's warehouse)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run")
    code, start, wall, cpu, samples = sample(command, args.interval)
    print(f"wall {wall:.2f} s, CPU {cpu:.2f} s: {cpu / wall:.2f} cores on average (exit code {code})")
    ledger = args.ledger
    if ledger is None and "--project" in command:
        runs = Path(command[command.index("--project") + 1]) / "warehouse" / "_runs"
        ledger = max(runs.glob("*.json"), default=None, key=lambda p: p.stat().st_mtime)
    if ledger is None:
        return code
    for name, at, seconds in steps(json.loads(ledger.read_text()), wall, start):
        # A sample covers the interval before it.
        inside = [cores for t, cores in samples if at + args.interval / 2 < t <= at + seconds + args.interval / 2]
        cores = f"{sum(inside) / len(inside):4.2f}" if inside else "   -"
        print(f"{at:7.1f} s  {seconds:6.2f} s  {cores} cores  {name}")
    return code


if __name__ == "__main__":
    sys.exit(main())
