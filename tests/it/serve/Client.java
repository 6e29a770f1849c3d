// pgJDBC (Debian's libpostgresql-jdbc-java) against `keymart serve`: the driver DBeaver, Metabase
// and Tableau use. tests/it/serve.rs runs it as a single-file program:
//   java -cp /usr/share/java/postgresql.jar Client.java PORT USER PASSWORD
// and checks its output: one JSON line {"check": name, ...} per check.

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

public class Client {
    static String quote(String text) {
        if (text == null) {
            return "null";
        }
        return "\"" + text.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n") + "\"";
    }

    static void report(String check, String fields) {
        System.out.println("{\"check\": " + quote(check) + (fields.isEmpty() ? "" : ", " + fields) + "}");
        System.out.flush();
    }

    interface Check {
        void run() throws SQLException;
    }

    /** A check's failure is reported with its SQLSTATE, never thrown. */
    static void check(String name, Check check) {
        try {
            check.run();
        } catch (SQLException e) {
            report(name, "\"sqlstate\": " + quote(e.getSQLState()) + ", \"message\": " + quote(e.getMessage()));
        }
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/keymart?sslmode=disable";
        Properties properties = new Properties();
        properties.setProperty("user", args[1]);
        properties.setProperty("password", args[2]);
        try (Connection connection = DriverManager.getConnection(url, properties)) {
            DatabaseMetaData meta = connection.getMetaData();
            report("connected", "\"product\": " + quote(meta.getDatabaseProductName())
                    + ", \"version\": " + quote(meta.getDatabaseProductVersion()));

            check("tables", () -> {
                List<String> tables = new ArrayList<>();
                String remarks = null;
                try (ResultSet rs = meta.getTables(null, "public", "%", new String[] {"TABLE"})) {
                    while (rs.next()) {
                        String table = rs.getString("TABLE_NAME");
                        tables.add(quote(table));
                        if (table.equals("customer_rfm")) {
                            remarks = rs.getString("REMARKS");
                        }
                    }
                }
                report("tables", "\"tables\": [" + String.join(", ", tables) + "], \"customer_rfm_remarks\": "
                        + quote(remarks));
            });

            check("columns", () -> {
                List<String> columns = new ArrayList<>();
                try (ResultSet rs = meta.getColumns(null, "public", "customer_rfm", "%")) {
                    while (rs.next()) {
                        columns.add("[" + quote(rs.getString("COLUMN_NAME")) + ", " + quote(rs.getString("TYPE_NAME"))
                                + ", " + rs.getInt("DATA_TYPE") + ", " + quote(rs.getString("REMARKS")) + "]");
                    }
                }
                report("columns", "\"columns\": [" + String.join(", ", columns) + "]");
            });

            check("prepared", () -> {
                String sql = "SELECT customer_id, frequency FROM customer_rfm WHERE frequency >= ? AND segment <> ? "
                        + "ORDER BY customer_id LIMIT ?";
                try (PreparedStatement statement = connection.prepareStatement(sql)) {
                    List<String> rows = new ArrayList<>();
                    // Run twice: pgJDBC switches to a named server-side statement from the fifth
                    // use by default; both runs go through Parse/Bind/Execute with typed values.
                    for (int run = 0; run < 2; run++) {
                        statement.setLong(1, 2L);
                        statement.setString(2, "Lost");
                        statement.setInt(3, 3);
                        rows.clear();
                        try (ResultSet rs = statement.executeQuery()) {
                            while (rs.next()) {
                                rows.add("[" + quote(rs.getString(1)) + ", " + rs.getLong(2) + "]");
                            }
                        }
                    }
                    report("prepared", "\"rows\": [" + String.join(", ", rows) + "]");
                }
            });

            check("query", () -> {
                try (Statement statement = connection.createStatement();
                        ResultSet rs = statement.executeQuery("SELECT count(*) FROM customer_rfm")) {
                    rs.next();
                    report("query", "\"count\": " + rs.getLong(1));
                }
            });

            check("write", () -> {
                try (Statement statement = connection.createStatement()) {
                    statement.execute("DROP TABLE customer_rfm");
                    report("write", "\"sqlstate\": null");
                }
            });
        }
    }
}
