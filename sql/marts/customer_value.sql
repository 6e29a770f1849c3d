-- What each customer is worth after the cost to serve them (DESIGN.md, customer_value), over the
-- value window ending at as_of, and what the models expect of them over the CLV horizon.
WITH per_customer AS (
    -- The per-customer figures are kept from night to night (stg_customer_value_inputs); the
    -- weeks observed grow with the date for everyone.
    SELECT *, CAST($as_of - first_purchase AS DOUBLE) / 7.0 AS t_cal
    FROM stg_customer_value_inputs
),
base AS (
    -- The customer base's margin rate, for customers without sales in the window.
    SELECT CAST(sum(completed_margin) AS DOUBLE) / CAST(nullif(sum(completed_amount), 0) AS DOUBLE) AS margin_rate
    FROM stg_orders
    WHERE order_date > $as_of - $value_window_days
),
params AS (SELECT * FROM model_parameters),
histories AS (
    -- The expected purchases depend on (x, t_x, t_cal) only, and customers share them: there are
    -- far fewer distinct histories than customers, so the ₂F₁ is evaluated once per history.
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
-- Minutes are priced in DECIMAL(38, ·), never narrower than the seconds' sum: no value the
-- contracts admit overflows before the mart's own decimal(28,2) (README, "Numbers that cannot
-- overflow").
SELECT
    c.customer_id,
    coalesce(c.revenue, 0) AS revenue,
    coalesce(c.gross_margin, 0) AS gross_margin,
    coalesce(c.freight_cost, 0) AS freight_cost,
    round(CAST(coalesce(c.service_seconds, 0) AS DECIMAL(38, 2)) / 60 * $service_cost_per_minute, 2) AS service_cost,
    coalesce(c.gross_margin, 0) - coalesce(c.freight_cost, 0)
        - round(CAST(coalesce(c.service_seconds, 0) AS DECIMAL(38, 2)) / 60 * $service_cost_per_minute, 2) AS net_value,
    c.order_count,
    CASE WHEN c.order_count > 0 THEN round(c.revenue / c.order_count, 2) END AS avg_order_value,
    CASE WHEN c.delivered > 0 THEN CAST(c.on_time AS DOUBLE) / c.delivered END AS on_time_rate,
    CASE WHEN c.delivered_lines > 0 THEN CAST(c.returned_lines AS DOUBLE) / c.delivered_lines END AS return_rate,
    $as_of - c.created_date AS tenure_days,
    c.x AS repeat_purchases,
    c.t_x AS weeks_to_last_purchase,
    c.t_cal AS weeks_observed,
    c.m AS mean_repeat_spend,
    bgnbd_expected_purchases(c.bgnbd_r, c.bgnbd_alpha, c.bgnbd_a, c.bgnbd_b, c.x, c.t_x, c.t_cal, $clv_horizon_months * 52.0 / 12.0)
        AS expected_purchases,
    gamma_gamma_expected_spend(c.gg_p, c.gg_q, c.gg_v, c.x, coalesce(c.m, 0)) AS expected_spend,
    e.discounted_purchases
        * gamma_gamma_expected_spend(c.gg_p, c.gg_q, c.gg_v, c.x, coalesce(c.m, 0))
        * CASE WHEN c.revenue > 0 THEN CAST(c.gross_margin AS DOUBLE) / CAST(c.revenue AS DOUBLE) ELSE c.margin_rate END AS clv
-- The distinct histories on the build side, the customers streaming past them (a join's left
-- side is held in memory).
FROM expected e
RIGHT JOIN (SELECT * FROM params CROSS JOIN base CROSS JOIN per_customer) c
    ON e.x = c.x AND e.t_x = c.t_x AND e.t_cal = c.t_cal
