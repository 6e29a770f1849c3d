"""Operating `keymart serve` with real clients (tests/it/serve.rs runs this and checks its output).

usage: operations.py cancel|limits|shutdown PORT HTTP_PORT [SERVER_PID]
       operations.py retention PORT HTTP_PORT SERVER_PID KEYMART PROJECT DAY

- cancel: psycopg's cancel of a query computing and of one streaming rows: 57014, and the
  connection answers afterwards.
- limits: (server with max_connections 3, max_concurrent_queries 1, max_queued_queries 1) the
  session over the limit gets 53300, the query over the queue 53000, and a client killed with
  SIGKILL in the middle of a result gives back both its session and its query slot.
- shutdown: SIGTERM while a query computes: its result arrives, a new connection is refused, the
  sessions are closed with 57P01.
- retention: a cursor over customer_rfm_history fetches its first rows; `KEYMART --project
  PROJECT run --as-of DAY` then publishes a night whose retention removes the snapshots the cursor
  reads from the tables; the cursor's other rows arrive, and a new statement sees the new night.

Each check prints one JSON line {"check": name, ...}.
"""

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

import psycopg

from checks import report, sqlstate_of

COMMAND, PORT, HTTP_PORT = sys.argv[1], sys.argv[2], sys.argv[3]
SERVER_PID = int(sys.argv[4]) if len(sys.argv) > 4 else None
CONNINFO = f"host=127.0.0.1 port={PORT} dbname=keymart user=analyst sslmode=disable connect_timeout=10"
# A result far larger than what the server can send in the test's time (400M rows; libpq reads
# ahead greedily, so a smaller one would be in the client's memory before it asks to cancel).
STREAM = "SELECT a.value FROM generate_series(1, 20000) a CROSS JOIN generate_series(1, 20000) b"
# A query that computes for seconds before its one row: sum(a) * sum(b).
COMPUTE = "SELECT sum(a.value * b.value) FROM generate_series(1, 60000) a CROSS JOIN generate_series(1, 30000) b"
COMPUTED = (60000 * 60001 // 2) * (30000 * 30001 // 2)


def outcome(run):
    """`run()`'s value, or the SQLSTATE and message of its error."""
    try:
        return {"value": run()}
    except psycopg.Error as e:
        return {"sqlstate": sqlstate_of(e), "message": str(e).strip()}


def metric(name):
    """One sample of the server's /metrics page (None when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    return None


def wait_for(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


class Raw:
    """A client on the wire protocol itself, which reads only when told to (libpq reads a result
    ahead into memory, so the server would never wait on it)."""

    def __init__(self):
        self.socket = socket.create_connection(("127.0.0.1", int(PORT)), timeout=60)
        parameters = b"user\0analyst\0database\0keymart\0\0"
        self.socket.sendall(struct.pack("!ii", 8 + len(parameters), 196608) + parameters)
        self.key = None

    def read(self, size):
        data = b""
        while len(data) < size:
            chunk = self.socket.recv(size - len(data))
            if not chunk:
                raise EOFError(f"the server closed the connection ({len(data)} of {size} bytes read)")
            data += chunk
        return data

    def message(self):
        kind, length = struct.unpack("!ci", self.read(5))
        body = self.read(length - 4)
        if kind == b"K":
            self.key = body
        return kind.decode(), body

    def until(self, kinds):
        """Messages up to the first of `kinds`: (that kind, its body, the error fields seen)."""
        error = {}
        while True:
            kind, body = self.message()
            if kind == "E":
                error = {part[:1].decode(): part[1:].decode() for part in body.split(b"\0") if part}
            if kind in kinds:
                return kind, body, error

    def query(self, sql):
        text = sql.encode() + b"\0"
        self.socket.sendall(b"Q" + struct.pack("!i", 4 + len(text)) + text)

    def cancel(self):
        with socket.create_connection(("127.0.0.1", int(PORT)), timeout=10) as other:
            other.sendall(struct.pack("!ii", 16, 80877102) + self.key)


def startup_error():
    """The ErrorResponse a bare StartupMessage gets, read off the wire."""
    _, _, fields = Raw().until("EZ")
    return {"severity": fields.get("S"), "sqlstate": fields.get("C"), "message": fields.get("M")}


def notices_of(conn):
    """The SQLSTATEs of the notices and asynchronous errors `conn` receives, as they come."""
    received = []
    conn.add_notice_handler(lambda diagnostic: received.append(diagnostic.sqlstate))
    return received


def cancel():
    with psycopg.connect(CONNINFO, autocommit=True) as conn:
        # A query computing: cancelled from another thread once it runs.
        def cancel_when_running():
            wait_for(lambda: metric("keymart_serve_queries_running") == 1, "the query to run")
            conn.cancel_safe()

        canceller = threading.Thread(target=cancel_when_running)
        canceller.start()
        started = time.monotonic()
        computed = outcome(lambda: conn.execute(COMPUTE).fetchone()[0])
        canceller.join()
        report("cancel_computing", seconds=time.monotonic() - started, **computed)
        report("after_cancel_computing", value=conn.execute("SELECT 6 * 7").fetchone()[0])

    # A query streaming its rows to a client that does not read them: the server waits on the
    # socket when the cancel request comes.
    raw = Raw()
    raw.until("Z")
    raw.query(STREAM)
    raw.until("D")
    time.sleep(1)
    raw.cancel()
    _, _, error = raw.until("Z")
    raw.query("SELECT 41 + 1")
    _, row, _ = raw.until("D")
    raw.until("Z")
    report("cancel_streaming", sqlstate=error.get("C"), message=error.get("M"))
    report("after_cancel_streaming", value=int(row[6:].decode()))


VICTIM = f"""
import sys, time
sys.argv = ["operations.py", "victim", {PORT!r}, {HTTP_PORT!r}]
from operations import Raw, STREAM
raw = Raw()
raw.until("Z")
raw.query(STREAM)
raw.until("D")
print("streaming", flush=True)
time.sleep(600)
"""


def limits():
    # A client holding a session and the only query slot, in the middle of a result.
    here = os.path.dirname(os.path.abspath(__file__))
    victim = subprocess.Popen(
        [sys.executable, "-c", VICTIM], cwd=here, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        limits_with(victim)
    finally:
        victim.kill()


def limits_with(victim):
    assert victim.stdout.readline().strip() == "streaming"
    second = psycopg.connect(CONNINFO, autocommit=True)
    third = psycopg.connect(CONNINFO, autocommit=True)
    report("sessions_open", value=metric("keymart_serve_connections"))
    report("over_max_connections", **outcome(lambda: psycopg.connect(CONNINFO).close()))
    report("over_max_connections_wire", **startup_error())

    # One query waits for the slot (the queue holds one); the next is refused at once.
    waiting = {}
    waiter = threading.Thread(
        target=lambda: waiting.update(outcome(lambda: second.execute("SELECT count(*) FROM customer_rfm").fetchone()[0]))
    )
    waiter.start()
    wait_for(lambda: metric("keymart_serve_queries_running") == 2, "the second query to queue")
    report("over_the_queue", **outcome(lambda: third.execute("SELECT 1").fetchone()[0]))

    # SIGKILL the client in the middle of its result: its slot goes to the waiting query, its
    # session to a new connection.
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    waiter.join(timeout=60)
    report("queued_after_kill", alive=waiter.is_alive(), **waiting)
    wait_for(lambda: metric("keymart_serve_connections") == 2, "the killed client's session to close")
    with psycopg.connect(CONNINFO, autocommit=True) as again:
        report("session_after_kill", value=again.execute("SELECT 7").fetchone()[0])
    second.close()
    third.close()
    wait_for(lambda: metric("keymart_serve_connections") == 0, "every session to close")
    report(
        "metrics",
        refused_sessions=metric("keymart_serve_connections_refused_total"),
        refused_queries=metric('keymart_serve_queries_total{outcome="refused"}'),
        running=metric("keymart_serve_queries_running"),
    )


def shutdown():
    idle = psycopg.connect(CONNINFO, autocommit=True)
    idle_notices = notices_of(idle)
    idle.execute("SELECT 1")
    busy = psycopg.connect(CONNINFO, autocommit=True)
    busy_notices = notices_of(busy)
    computed = {}
    query = threading.Thread(target=lambda: computed.update(outcome(lambda: busy.execute(COMPUTE).fetchone()[0])))
    query.start()
    # The statement is in flight: stop the server.
    wait_for(lambda: metric("keymart_serve_queries_running") == 1, "the query to run")
    os.kill(SERVER_PID, signal.SIGTERM)
    time.sleep(0.5)
    report("new_connection", **outcome(lambda: psycopg.connect(CONNINFO).close()))
    query.join(timeout=120)
    report("in_flight", expected=COMPUTED, finished=not query.is_alive(), **computed)
    # libpq takes an error that comes while no statement runs as a notice, then finds the
    # connection closed.
    report("idle_session", notices=idle_notices, **outcome(lambda: idle.execute("SELECT 1").fetchone()[0]))
    report("busy_session_after", notices=busy_notices, **outcome(lambda: busy.execute("SELECT 1").fetchone()[0]))


def retention():
    keymart, project, day = sys.argv[5:8]
    with psycopg.connect(CONNINFO) as conn:
        with conn.cursor(name="history") as cursor:
            cursor.execute("SELECT as_of, customer_id FROM customer_rfm_history")
            rows = cursor.fetchmany(10)
            run = subprocess.run(
                [keymart, "--project", project, "-q", "run", "--as-of", day], capture_output=True, text=True, timeout=300
            )
            report("publish", exit=run.returncode, stderr=run.stderr[-2000:])
            rows += cursor.fetchall()
    by_date = {}
    for as_of, _ in rows:
        by_date[str(as_of)] = by_date.get(str(as_of), 0) + 1
    report("cursor", rows=len(rows), by_date=by_date)
    with psycopg.connect(CONNINFO) as conn:
        after = conn.execute("SELECT as_of, count(*) FROM customer_rfm_history GROUP BY as_of ORDER BY as_of")
        report("after", by_date={str(d): n for d, n in after.fetchall()})


if __name__ == "__main__":
    {"cancel": cancel, "limits": limits, "shutdown": shutdown, "retention": retention}[COMMAND]()
