"""The extracts in forms DuckDB reads, made before its timing starts: the GBK customer master
re-encoded as UTF-8 and the Excel contacts written as CSV (DuckDB has no GBK decoder, and its Excel
reader is an extension it would download). Orders and shipments are linked as they are.

    python bench/duckdb/prepare.py --landing L --day D --out PREPARED
"""

import argparse
import csv
import datetime
from pathlib import Path

import openpyxl


def reencode(source, target):
    with open(source, encoding="gbk", newline="") as read, open(target, "w", encoding="utf-8", newline="") as write:
        for chunk in iter(lambda: read.read(1 << 20), ""):
            write.write(chunk)


def cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def excel_to_csv(source, target):
    book = openpyxl.load_workbook(source, read_only=True)
    with open(target, "w", encoding="utf-8", newline="") as write:
        out = csv.writer(write)
        for row in book.active.iter_rows(values_only=True):
            out.writerow(cell(v) for v in row)
    book.close()


def prepare(landing, day, out):
    for extract in sorted(landing.glob(f"*/*/{day}/*")):
        folder = out / extract.parent.relative_to(landing)
        folder.mkdir(parents=True, exist_ok=True)
        if extract.suffix == ".xlsx":
            excel_to_csv(extract, folder / (extract.stem + ".csv"))
        elif extract.parts[-4:-2] == ("erp", "customers"):
            reencode(extract, folder / extract.name)
        elif not (folder / extract.name).exists():
            (folder / extract.name).symlink_to(extract)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--landing", type=Path, required=True)
    parser.add_argument("--day", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    prepare(args.landing, args.day, args.out)


if __name__ == "__main__":
    main()
