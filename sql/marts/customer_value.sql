-- What each customer is worth after the cost to serve them (DESIGN.md, customer_value), over the
-- value window ending at as_of, and what the models expect of them over the CLV horizon.
WITH window_lines AS (
    SELECT *
    FROM stg_order_lines
    WHERE order_date > $as_of - $value_window_days
),
sales AS (
    SELECT
        customer_id,
        coalesce(sum(CASE WHEN is_completed THEN net_amount END), 0) AS revenue,
        coalesce(sum(CASE WHEN is_completed THEN net_amount - cost_amount END), 0) AS gross_margin,
        count(DISTINCT CASE WHEN is_completed THEN order_id END) AS order_count,
        count(CASE WHEN status = 'returned' THEN 1 END) AS returned_lines,
        count(CASE WHEN status IN ('completed', 'returned') THEN 1 END) AS delivered_lines
    FROM window_lines
    GROUP BY customer_id
),
logistics AS (
    SELECT
        customer_id,
        coalesce(sum(freight_cost), 0) AS freight_cost,
        count(CASE WHEN delivered_date IS NOT NULL THEN 1 END) AS delivered,
        count(CASE WHEN delivered_date IS NOT NULL AND delivered_date <= promised_date THEN 1 END) AS on_time
    FROM stg_shipments
    WHERE ship_date > $as_of - $value_window_days
    GROUP BY customer_id
),
service AS (
    SELECT customer_id, coalesce(sum(duration_sec), 0) AS service_seconds
    FROM stg_interactions
    WHERE contact_date > $as_of - $value_window_days
    GROUP BY customer_id
),
base AS (
    -- The customer base's margin rate, for customers without sales in the window.
    SELECT CAST(sum(gross_margin) AS DOUBLE) / CAST(nullif(sum(revenue), 0) AS DOUBLE) AS margin_rate
    FROM sales
),
params AS (SELECT * FROM model_parameters),
months AS (SELECT unnest(generate_series(1, $clv_horizon_months)) AS month),
curve AS (
    -- Purchases expected by the end of each future month.
    SELECT
        h.customer_id,
        months.month,
        bgnbd_expected_purchases(p.bgnbd_r, p.bgnbd_alpha, p.bgnbd_a, p.bgnbd_b, h.x, h.t_x, h.t_cal, months.month * 52.0 / 12.0)
            AS cumulative
    FROM stg_customer_history h
    CROSS JOIN params p
    CROSS JOIN months
),
monthly AS (
    SELECT
        customer_id,
        month,
        cumulative - coalesce(lag(cumulative) OVER (PARTITION BY customer_id ORDER BY month), 0) AS purchases
    FROM curve
),
expected AS (
    -- Each month's purchases discounted to today: valued below at the expected spend and margin.
    SELECT customer_id, sum(purchases / power(1.0 + $clv_annual_discount_rate, month / 12.0)) AS discounted_purchases
    FROM monthly
    GROUP BY customer_id
)
SELECT
    c.customer_id,
    coalesce(s.revenue, 0) AS revenue,
    coalesce(s.gross_margin, 0) AS gross_margin,
    coalesce(l.freight_cost, 0) AS freight_cost,
    round(CAST(coalesce(v.service_seconds, 0) AS DECIMAL(18, 2)) / 60 * $service_cost_per_minute, 2) AS service_cost,
    coalesce(s.gross_margin, 0) - coalesce(l.freight_cost, 0)
        - round(CAST(coalesce(v.service_seconds, 0) AS DECIMAL(18, 2)) / 60 * $service_cost_per_minute, 2) AS net_value,
    coalesce(s.order_count, 0) AS order_count,
    CASE WHEN s.order_count > 0 THEN round(s.revenue / s.order_count, 2) END AS avg_order_value,
    CASE WHEN l.delivered > 0 THEN CAST(l.on_time AS DOUBLE) / l.delivered END AS on_time_rate,
    CASE WHEN s.delivered_lines > 0 THEN CAST(s.returned_lines AS DOUBLE) / s.delivered_lines END AS return_rate,
    $as_of - c.created_date AS tenure_days,
    h.x AS repeat_purchases,
    h.t_x AS weeks_to_last_purchase,
    h.t_cal AS weeks_observed,
    h.m AS mean_repeat_spend,
    bgnbd_expected_purchases(p.bgnbd_r, p.bgnbd_alpha, p.bgnbd_a, p.bgnbd_b, h.x, h.t_x, h.t_cal, $clv_horizon_months * 52.0 / 12.0)
        AS expected_purchases,
    gamma_gamma_expected_spend(p.gg_p, p.gg_q, p.gg_v, h.x, coalesce(h.m, 0)) AS expected_spend,
    e.discounted_purchases
        * gamma_gamma_expected_spend(p.gg_p, p.gg_q, p.gg_v, h.x, coalesce(h.m, 0))
        * CASE WHEN s.revenue > 0 THEN CAST(s.gross_margin AS DOUBLE) / CAST(s.revenue AS DOUBLE) ELSE base.margin_rate END AS clv
FROM stg_customers c
LEFT JOIN sales s ON s.customer_id = c.customer_id
LEFT JOIN logistics l ON l.customer_id = c.customer_id
LEFT JOIN service v ON v.customer_id = c.customer_id
LEFT JOIN stg_customer_history h ON h.customer_id = c.customer_id
LEFT JOIN expected e ON e.customer_id = c.customer_id
CROSS JOIN params p
CROSS JOIN base
