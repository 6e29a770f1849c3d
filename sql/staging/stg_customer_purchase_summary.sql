-- Each customer's purchases summarised (one purchase occasion per customer-day): the BG/NBD and
-- Gamma-Gamma history in weeks, x repeat purchases, the last at t_x weeks after the first, m the
-- mean value of the repeat purchases (NULL without any); and the purchases in the windows the
-- marts look at, which end at as_of: RFM's frequency and monetary value, churn's purchases in its
-- window and the one before. What grows with the date for every customer (recency, the weeks
-- observed) is left to stg_customer_history and the marts.
-- The repeat purchases' total is all purchases less the first one: an ordered aggregate, so no
-- window over every purchase is needed.
SELECT
    customer_id,
    min(purchase_date) AS first_purchase,
    max(purchase_date) AS last_purchase,
    CAST(count(*) - 1 AS DOUBLE) AS x,
    CAST(max(purchase_date) - min(purchase_date) AS DOUBLE) / 7.0 AS t_x,
    CASE WHEN count(*) > 1 THEN
        CAST(sum(net_amount) - first_value(net_amount ORDER BY purchase_date) AS DOUBLE) / CAST(count(*) - 1 AS DOUBLE)
    END AS m,
    count(CASE WHEN purchase_date > $as_of - $rfm_window_days THEN 1 END) AS frequency,
    coalesce(sum(CASE WHEN purchase_date > $as_of - $rfm_window_days THEN net_amount END), 0) AS monetary,
    count(CASE WHEN purchase_date > $as_of - $churn_window_days THEN 1 END) AS purchases_current,
    count(CASE WHEN purchase_date <= $as_of - $churn_window_days
                AND purchase_date > $as_of - 2 * $churn_window_days THEN 1 END) AS purchases_previous
FROM stg_purchases
GROUP BY customer_id
