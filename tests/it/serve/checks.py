"""What the client scripts of tests/it/serve.rs share: one JSON line per check, and the SQLSTATE of
a psycopg error."""

import json


def report(check, **fields):
    print(json.dumps({"check": check, **fields}, default=str), flush=True)


def sqlstate_of(error):
    state = getattr(error, "sqlstate", None)
    if state is None and getattr(error, "diag", None) is not None:
        state = error.diag.sqlstate
    return state
