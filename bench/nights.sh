#!/usr/bin/env bash
# The full build and the next night of one or more keymart binaries at 1M customers, taking turns
# run by run in one sitting (BENCHMARKS.md, "Delta commits in a 1M night"):
#
#   bench/nights.sh WORK ROUNDS NAME=BINARY=CHECKOUT ...
#
# WORK holds the landing (generated on first use by the first binary, as in BENCHMARKS.md's
# Method) and one project per NAME, copied from CHECKOUT (its keymart.yaml, pipelines/ and sql/:
# each binary runs the project of its own commit). Each round, each side starts from an empty
# warehouse; its inputs are read into the page cache before each timed night. Prints
# "round name date seconds KB" per night (also appended to WORK/nights.txt); the ledgers stay in
# WORK/NAME/warehouse/_runs.
set -euo pipefail
work=$1 rounds=$2
shift 2
mkdir -p "$work"
first_binary=$(echo "$1" | cut -d= -f2)
first_checkout=$(echo "$1" | cut -d= -f3)
if [ ! -d "$work/landing" ]; then
  mkdir -p "$work/generator"
  cp -r "$first_checkout"/{keymart.yaml,pipelines,sql} "$work/generator/"
  "$first_binary" --project "$work/generator" -q generate --customers 1000000 --days 2 --history-days 364 \
    --start 2024-12-31 --seed 7 --out "$work/landing"
fi
for side in "$@"; do
  name=$(echo "$side" | cut -d= -f1) checkout=$(echo "$side" | cut -d= -f3)
  rm -rf "${work:?}/$name" && mkdir -p "$work/$name"
  cp -r "$checkout"/{keymart.yaml,pipelines,sql} "$work/$name/"
done
for round in $(seq "$rounds"); do
  for side in "$@"; do
    name=$(echo "$side" | cut -d= -f1) binary=$(echo "$side" | cut -d= -f2)
    rm -rf "${work:?}/$name/warehouse"
    for day in 2024-12-31 2025-01-01; do
      sync
      find "$work/landing" -type f -exec cat {} + >/dev/null
      /usr/bin/time -a -o "$work/nights.txt" -f "$round $name $day %e %M" \
        "$binary" --project "$work/$name" --landing "$work/landing" -q run --as-of "$day" >/dev/null
      tail -n1 "$work/nights.txt"
    done
  done
done
