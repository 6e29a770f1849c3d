-- What each customer is worth after the cost to serve them (DESIGN.md, customer_value), over the
-- value window ending at as_of, and what the models expect of them over the CLV horizon.
WITH sales AS (
    SELECT
        customer_id,
        coalesce(sum(completed_amount), 0) AS revenue,
        coalesce(sum(completed_margin), 0) AS gross_margin,
        count(CASE WHEN completed_lines > 0 THEN 1 END) AS order_count,
        sum(returned_lines) AS returned_lines,
        sum(delivered_lines) AS delivered_lines
    FROM stg_orders
    WHERE order_date > $as_of - $value_window_days
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
histories AS (
    -- The expected purchases depend on (x, t_x, t_cal) only, and customers share them: at a
    -- million customers 275 115 distinct histories, so the ₂F₁ is evaluated 3.6 times less often.
    SELECT x, t_x, t_cal
    FROM stg_customer_history
    GROUP BY x, t_x, t_cal
),
months AS (
    -- Every history once per month of the CLV horizon (an unnest streams; a cross join with a
    -- months table would hold all histories in memory).
    SELECT x, t_x, t_cal, unnest(generate_series(1, $clv_horizon_months)) AS month
    FROM histories
),
expected AS (
    -- Purchases expected in each future month, discounted to today, summed by parts from the
    -- cumulative curve Cₘ: Σₘ (Cₘ − Cₘ₋₁)·δₘ = Σₘ<M Cₘ·(δₘ − δₘ₊₁) + C_M·δ_M, δₘ = (1 + rate)^(−m/12),
    -- so no window over histories × months is needed. Valued below at the expected spend and margin.
    SELECT
        h.x,
        h.t_x,
        h.t_cal,
        sum(
            bgnbd_expected_purchases(p.bgnbd_r, p.bgnbd_alpha, p.bgnbd_a, p.bgnbd_b, h.x, h.t_x, h.t_cal, h.month * 52.0 / 12.0)
            * CASE WHEN h.month = $clv_horizon_months
                THEN power(1.0 + $clv_annual_discount_rate, -h.month / 12.0)
                ELSE power(1.0 + $clv_annual_discount_rate, -h.month / 12.0)
                    - power(1.0 + $clv_annual_discount_rate, -(h.month + 1) / 12.0)
              END
        ) AS discounted_purchases
    FROM params p  -- the one-row side first: a cross join holds its left side in memory
    CROSS JOIN months h
    GROUP BY h.x, h.t_x, h.t_cal
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
FROM params p
CROSS JOIN base
CROSS JOIN stg_customers c
LEFT JOIN sales s ON s.customer_id = c.customer_id
LEFT JOIN logistics l ON l.customer_id = c.customer_id
LEFT JOIN service v ON v.customer_id = c.customer_id
LEFT JOIN stg_customer_history h ON h.customer_id = c.customer_id
LEFT JOIN expected e ON e.x = h.x AND e.t_x = h.t_x AND e.t_cal = h.t_cal
