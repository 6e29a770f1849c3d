-- Each customer's purchase summary with t_cal, the weeks observed since the first purchase: the
-- BG/NBD history (x, t_x, t_cal) and Gamma-Gamma's m that the models and marts read.
SELECT
    customer_id,
    first_purchase,
    last_purchase,
    x,
    t_x,
    CAST($as_of - first_purchase AS DOUBLE) / 7.0 AS t_cal,
    m,
    frequency,
    monetary,
    purchases_current,
    purchases_previous
FROM stg_customer_purchase_summary
