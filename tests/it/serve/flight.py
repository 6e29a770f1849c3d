"""`keymart serve --flight` with ADBC's Flight SQL driver (tests/it/serve.rs runs this and checks
its output).

usage: flight.py PORT USER PASSWORD
       flight.py PORT USER PASSWORD ROOT_PEM   (the server has serve.tls: TLS checks only)

Each check prints one JSON line {"check": name, ...}.
"""

import sys

import adbc_driver_flightsql.dbapi as flightsql

from checks import report

PORT, USER, PASSWORD = sys.argv[1], sys.argv[2], sys.argv[3]
ROOT = sys.argv[4] if len(sys.argv) > 4 else None
URI = f"grpc://127.0.0.1:{PORT}"


def connect(password, uri=URI, **options):
    return flightsql.connect(uri, db_kwargs={"username": USER, "password": password, **options})


def tls():
    """Over TLS, trusting the server's certificate; in the clear, refused."""
    with open(ROOT) as pem:
        roots = {"adbc.flight.sql.client_option.tls_root_certs": pem.read()}
    with connect(PASSWORD, f"grpc+tls://localhost:{PORT}", **roots) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM customer_rfm")
        report("tls_query", count=cursor.fetchone()[0])
    report("plaintext", **error_of(lambda: connect(PASSWORD).cursor().execute("SELECT 1")))


def error_of(run):
    try:
        value = run()
        return {"error": None, "value": str(value)[:200]}
    except Exception as e:  # the driver's own error classes; the message names the gRPC status
        return {"error": type(e).__name__, "message": str(e)}


def main():
    report("wrong_password", **error_of(lambda: connect("not-the-password").cursor().execute("SELECT 1")))
    with connect(PASSWORD) as conn:
        with conn.cursor() as cursor:
            cursor.execute("SELECT customer_id, segment, monetary FROM customer_rfm ORDER BY customer_id")
            table = cursor.fetch_arrow_table()
            report(
                "query",
                rows=table.num_rows,
                types={f.name: str(f.type) for f in table.schema},
                first=[str(v) for v in table.slice(0, 1).to_pylist()[0].values()],
                monetary=str(sum(v for v in table.column("monetary").to_pylist() if v is not None)),
            )
            cursor.execute("SELECT as_of, count(*) AS n FROM customer_rfm_history GROUP BY as_of ORDER BY as_of")
            report("history", rows=[[str(d), n] for d, n in cursor.fetchall()])
            for name, sql in [
                ("write", "DROP TABLE customer_rfm"),
                ("insert", "INSERT INTO customer_rfm (customer_id) VALUES ('x')"),
                ("set", "SET keymart.as_of = '2024-06-01'"),
                ("unknown_table", "SELECT * FROM stg_orders"),
                ("file", "SELECT * FROM '/etc/passwd'"),
                ("malformed", "SELEC 1"),
                # Seconds of computing, past the server's statement_timeout_seconds (2 s here).
                ("timeout", "SELECT sum(a.value * b.value) FROM generate_series(1, 600000) a CROSS JOIN generate_series(1, 300000) b"),
            ]:
                report(name, **error_of(lambda: (cursor.execute(sql), cursor.fetchall())[1]))
            # The timed-out query stops computing at its timeout (src/serve/queries.rs, stop
            # points), so the next statement is answered at once; the attempts are counted.
            for attempt in range(1, 31):
                answered = error_of(lambda: (cursor.execute("SELECT count(*) FROM customer_rfm"), cursor.fetchone())[1])
                if answered["error"] is None or "57014" not in answered.get("message", ""):
                    break
            report("still_serving", attempts=attempt, **answered)
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        tables = sorted(
            t["table_name"]
            for catalog in objects
            if catalog["catalog_name"] == "keymart"
            for schema in catalog["catalog_db_schemas"]
            if schema["db_schema_name"] == "public"
            for t in schema["db_schema_tables"]
        )
        report("objects", tables=tables)
        report("table_schema", fields=conn.adbc_get_table_schema("customer_rfm").names)


tls() if ROOT else main()
