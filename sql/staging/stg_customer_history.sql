-- Each customer's purchase history summarised the way BG/NBD and Gamma-Gamma read it (weeks,
-- one purchase occasion per customer-day): x repeat purchases, the last at t_x, observed for
-- t_cal weeks since the first; m the mean value of the repeat purchases (NULL without any).
WITH ordered AS (
    SELECT
        customer_id,
        purchase_date,
        net_amount,
        row_number() OVER (PARTITION BY customer_id ORDER BY purchase_date) AS occasion
    FROM stg_purchases
)
SELECT
    customer_id,
    min(purchase_date) AS first_purchase,
    max(purchase_date) AS last_purchase,
    CAST(count(*) - 1 AS DOUBLE) AS x,
    CAST(max(purchase_date) - min(purchase_date) AS DOUBLE) / 7.0 AS t_x,
    CAST($as_of - min(purchase_date) AS DOUBLE) / 7.0 AS t_cal,
    CAST(avg(CASE WHEN occasion > 1 THEN net_amount END) AS DOUBLE) AS m
FROM ordered
GROUP BY customer_id
