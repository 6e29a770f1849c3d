-- Each customer's purchase history summarised the way BG/NBD and Gamma-Gamma read it (weeks,
-- one purchase occasion per customer-day): x repeat purchases, the last at t_x, observed for
-- t_cal weeks since the first; m the mean value of the repeat purchases (NULL without any).
-- The repeat purchases' total is all purchases less the first one: an ordered aggregate, so no
-- window over every purchase is needed.
SELECT
    customer_id,
    min(purchase_date) AS first_purchase,
    max(purchase_date) AS last_purchase,
    CAST(count(*) - 1 AS DOUBLE) AS x,
    CAST(max(purchase_date) - min(purchase_date) AS DOUBLE) / 7.0 AS t_x,
    CAST($as_of - min(purchase_date) AS DOUBLE) / 7.0 AS t_cal,
    CASE WHEN count(*) > 1 THEN
        CAST(sum(net_amount) - first_value(net_amount ORDER BY purchase_date) AS DOUBLE) / CAST(count(*) - 1 AS DOUBLE)
    END AS m
FROM stg_purchases
GROUP BY customer_id
