-- The key accounts at as_of (DESIGN.md, key_accounts): customers ranked by net value; the key
-- accounts are those making the first key_account_value_share of net value (Pareto class A) with
-- at least key_account_min_net_value; their status against the previous snapshot.
WITH totals AS (
    -- One row (a window over all rows, OVER (), would hold them all in one batch).
    SELECT sum(CASE WHEN net_value > 0 THEN net_value ELSE 0 END) AS value_total
    FROM customer_value
),
ranked AS (
    SELECT
        v.customer_id,
        v.net_value,
        row_number() OVER (ORDER BY v.net_value DESC, v.customer_id) AS value_rank,
        sum(CASE WHEN v.net_value > 0 THEN v.net_value ELSE 0 END)
            OVER (ORDER BY v.net_value DESC, v.customer_id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS value_before,
        t.value_total
    FROM customer_value v
    CROSS JOIN totals t
),
current AS (
    SELECT
        customer_id,
        net_value,
        value_rank,
        CAST(coalesce(value_before, 0) + greatest(net_value, 0) AS DOUBLE) / CAST(nullif(value_total, 0) AS DOUBLE) AS cumulative_share,
        value_total > 0
            AND net_value > 0
            AND coalesce(value_before, 0) < $key_account_value_share * value_total
            AND net_value >= $key_account_min_net_value AS is_key_account
    FROM ranked
),
previous AS (
    SELECT customer_id, is_key_account
    FROM key_accounts_history
    WHERE as_of = (SELECT max(as_of) FROM key_accounts_history)
)
SELECT
    c.customer_id,
    c.net_value,
    c.value_rank,
    c.cumulative_share,
    c.is_key_account,
    CASE
        WHEN c.is_key_account AND NOT coalesce(p.is_key_account, false) THEN 'new'
        WHEN c.is_key_account AND ch.churn_risk = 'high' THEN 'at_risk'
        WHEN c.is_key_account THEN 'retained'
        WHEN coalesce(p.is_key_account, false) THEN 'lost'
    END AS status,
    coalesce(p.is_key_account, false) AS was_key_account,
    ch.churn_risk
FROM current c
LEFT JOIN previous p ON p.customer_id = c.customer_id
LEFT JOIN customer_churn ch ON ch.customer_id = c.customer_id
