"""A mart table's committed files, read from its Delta log's JSON commits (adds minus removes), as
the bench scripts need them; no Delta library, so the reading is independent of keymart's."""

import json
import os
import urllib.parse


def committed_files(table):
    """{file path under `table`: as_of} of the table's live files; {} when it has no log."""
    log = os.path.join(table, "_delta_log")
    live = {}
    for name in sorted(f for f in os.listdir(log) if f.endswith(".json")) if os.path.isdir(log) else []:
        with open(os.path.join(log, name), encoding="utf-8") as f:
            for action in map(json.loads, filter(str.strip, f)):
                if "add" in action:
                    live[urllib.parse.unquote(action["add"]["path"])] = action["add"]["partitionValues"].get("as_of")
                elif "remove" in action:
                    live.pop(urllib.parse.unquote(action["remove"]["path"]), None)
    return {os.path.join(table, path): day for path, day in live.items()}
