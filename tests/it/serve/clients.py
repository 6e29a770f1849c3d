"""Real Python clients against `keymart serve` (tests/it/serve.rs runs this and checks its output).

usage: clients.py PORT USER PASSWORD RAW_PARQUET_PATH

psycopg 3 (simple and extended protocol, typed parameters, a server-side cursor), SQLAlchemy 2's
inspector and pandas.read_sql, and the errors a client must get: each check prints one JSON line
{"check": name, ...}; an error is reported with its SQLSTATE, never raised.
"""

import sys
from decimal import Decimal

import pandas
import psycopg
import sqlalchemy

from checks import report, sqlstate_of

PORT, USER, PASSWORD, RAW_FILE = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]


def conninfo(dbname="keymart", password=PASSWORD):
    return f"host=127.0.0.1 port={PORT} dbname={dbname} user={USER} password={password} sslmode=disable"


def failing(check, run):
    """Run `run`; report the SQLSTATE and message of the error it must raise."""
    try:
        run()
        report(check, error=None)
    except psycopg.Error as e:
        report(check, sqlstate=sqlstate_of(e), message=str(e).strip())


with psycopg.connect(conninfo(), autocommit=True) as conn:
    # Simple protocol (ClientCursor binds on the client and sends one Query message).
    simple = psycopg.ClientCursor(conn)
    simple.execute("SELECT count(*) FROM customer_rfm")
    report("simple_count", rows=simple.fetchone()[0])
    simple.execute("SELECT count(*) FROM customer_rfm WHERE segment = 'Champions' AND monetary > 100")
    champions = simple.fetchone()[0]

    # Extended protocol with typed parameters (Parse/Bind/Execute, server-side binding).
    cur = conn.cursor()
    cur.execute(
        "SELECT count(*) FROM customer_rfm WHERE segment = %s AND monetary > %s",
        ("Champions", Decimal("100")),
    )
    report("extended_count", rows=cur.fetchone()[0], simple=champions)
    cur.execute(
        "SELECT customer_id, frequency FROM customer_rfm WHERE frequency >= %s ORDER BY customer_id LIMIT %s",
        (2, 3),
    )
    rows = cur.fetchall()
    report("extended_typed", rows=len(rows), types=[type(v).__name__ for v in rows[0]] if rows else [])
    cur.execute("SELECT %s::date AS d, %s::bigint + 1 AS n", ("2024-06-02", 41), binary=True)
    report("binary_params", row=list(cur.fetchone()))

    # Writes are refused and the connection keeps answering.
    for name, sql in [
        ("create", "CREATE TABLE t (a int)"),
        ("insert", "INSERT INTO customer_rfm (customer_id) VALUES ('x')"),
        ("copy", "COPY customer_rfm TO '/tmp/keymart-serve-copy.csv'"),
        ("drop", "DROP TABLE customer_rfm"),
    ]:
        failing(f"write_{name}", lambda sql=sql: conn.execute(sql))
    report("after_writes", value=conn.execute("SELECT 1").fetchone()[0])

    failing("file_path", lambda: conn.execute(f"SELECT count(*) FROM '{RAW_FILE}'"))
    failing("raw_table", lambda: conn.execute("SELECT count(*) FROM raw.erp_orders"))
    failing("unknown_table", lambda: conn.execute("SELECT * FROM no_such_mart"))
    failing("syntax", lambda: conn.execute("SELEC 1"))

    conn.execute("SET statement_timeout = '200ms'")
    failing(
        "timeout",
        lambda: conn.execute(
            "SELECT sum(a.value * b.value) FROM generate_series(1, 30000) a CROSS JOIN generate_series(1, 30000) b"
        ),
    )
    conn.execute("RESET statement_timeout")
    failing(
        "memory",
        lambda: conn.execute(
            "SELECT count(*) FROM generate_series(1, 3000000) a JOIN generate_series(1, 3000000) b ON a.value = b.value"
        ),
    )
    report("after_errors", value=conn.execute("SELECT count(*) FROM customer_rfm").fetchone()[0])

    # The session's snapshot date.
    latest = conn.execute("SELECT max(as_of) FROM keymart_snapshots WHERE mart = 'customer_rfm'").fetchone()[0]
    conn.execute("SET keymart.as_of = '2024-06-01'")
    pinned = conn.execute("SELECT DISTINCT as_of FROM customer_rfm").fetchall()
    shown = conn.execute("SHOW keymart.as_of").fetchone()[0]
    conn.execute("RESET keymart.as_of")
    back = conn.execute("SELECT DISTINCT as_of FROM customer_rfm").fetchall()
    report("as_of", latest=latest, pinned=[r[0] for r in pinned], shown=shown, back=[r[0] for r in back])

# A server-side cursor (DECLARE / FETCH in a transaction) fetching every row in batches.
with psycopg.connect(conninfo()) as conn:
    batches, ids = 0, []
    with conn.cursor(name="every_customer") as cursor:
        cursor.execute("SELECT customer_id, segment FROM customer_rfm ORDER BY customer_id")
        while True:
            batch = cursor.fetchmany(37)
            if not batch:
                break
            batches += 1
            ids.extend(row[0] for row in batch)
    report("server_cursor", rows=len(ids), distinct=len(set(ids)), batches=batches, ordered=ids == sorted(ids))

# SQLAlchemy 2 and pandas, the path Superset and notebooks take.
engine = sqlalchemy.create_engine(f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{PORT}/keymart")
inspector = sqlalchemy.inspect(engine)
tables = inspector.get_table_names()
columns = inspector.get_columns("customer_rfm")
report("sqlalchemy_tables", tables=sorted(tables))
report("sqlalchemy_columns", columns=[(c["name"], str(c["type"])) for c in columns])
# The pipeline's descriptions, as the comments Superset shows next to tables and columns.
report(
    "sqlalchemy_comments",
    table=inspector.get_table_comment("customer_rfm")["text"],
    columns={c["name"]: c.get("comment") for c in columns},
)
with engine.connect() as connection:
    described = connection.exec_driver_sql(
        "SELECT obj_description(c.oid, 'pg_class'), col_description(c.oid, a.attnum) "
        "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid "
        "WHERE c.relname = 'customer_rfm' AND a.attname = 'monetary'"
    ).fetchall()
report("descriptions", rows=[list(r) for r in described])
frame = pandas.read_sql("SELECT segment, count(*) AS customers FROM customer_rfm GROUP BY segment", engine)
report("pandas", customers=int(frame["customers"].sum()), segments=len(frame))
engine.dispose()

# Who may connect.
failing("wrong_password", lambda: psycopg.connect(conninfo(password=PASSWORD + "x")).close())
failing("other_database", lambda: psycopg.connect(conninfo(dbname="postgres")).close())
