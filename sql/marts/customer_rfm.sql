-- Recency / Frequency / Monetary per customer at as_of (DESIGN.md, customer_rfm).
-- recency over all history; frequency and monetary over the window ending at as_of.
WITH per_customer AS (
    -- Frequency and monetary value in the window are kept per customer from night to night
    -- (stg_customer_purchase_summary); recency grows with the date for everyone.
    SELECT customer_id, $as_of - last_purchase AS recency_days, frequency, monetary
    FROM stg_customer_history
),
totals AS (
    -- One row: how many customers are scored and the value they make together.
    SELECT count(*) AS customers, coalesce(sum(monetary), 0) AS value_total
    FROM stg_customer_history
),
scored AS (
    SELECT
        p.*,
        -- Quintiles, what ntile(5) gives, from row numbers and the count: ntile holds its whole
        -- input in one batch, more than the memory pool could sort at 5M customers; row numbers
        -- stream out of a sort that spills. Ties broken by customer_id so every quintile has its share.
        ntile_bucket(row_number() OVER (ORDER BY recency_days DESC, customer_id), t.customers, 5) AS r_score,
        ntile_bucket(row_number() OVER (ORDER BY frequency, customer_id), t.customers, 5) AS f_score,
        ntile_bucket(row_number() OVER (ORDER BY monetary, customer_id), t.customers, 5) AS m_score,
        sum(monetary) OVER (ORDER BY monetary DESC, customer_id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS value_before,
        t.value_total
    FROM per_customer p
    CROSS JOIN totals t
)
SELECT
    customer_id,
    recency_days,
    frequency,
    monetary,
    r_score,
    f_score,
    m_score,
    concat(CAST(r_score AS VARCHAR), CAST(f_score AS VARCHAR), CAST(m_score AS VARCHAR)) AS rfm_code,
    CASE
        WHEN r_score <= 2 AND f_score <= 2 THEN 'Hibernating'
        WHEN r_score <= 2 AND f_score <= 4 THEN 'At Risk'
        WHEN r_score <= 2 THEN 'Can''t Lose'
        WHEN r_score = 3 AND f_score <= 2 THEN 'About to Sleep'
        WHEN r_score = 3 AND f_score = 3 THEN 'Need Attention'
        WHEN r_score <= 4 AND f_score >= 4 THEN 'Loyal'
        WHEN r_score = 4 AND f_score = 1 THEN 'Promising'
        WHEN r_score = 5 AND f_score = 1 THEN 'New'
        WHEN f_score <= 3 THEN 'Potential Loyalists'
        ELSE 'Champions'
    END AS segment,
    -- A: the customers that make the first 80 % of value (the one crossing 80 % included), B: to 95 %.
    CASE
        WHEN value_total > 0 AND coalesce(value_before, 0) < 0.80 * value_total THEN 'A'
        WHEN value_total > 0 AND coalesce(value_before, 0) < 0.95 * value_total THEN 'B'
        ELSE 'C'
    END AS pareto_class
FROM scored
