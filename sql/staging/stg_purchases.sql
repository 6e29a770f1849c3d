-- One purchase occasion per customer-day (completed lines only), as RFM and the models count them.
SELECT
    customer_id,
    order_date AS purchase_date,
    sum(net_amount) AS net_amount,
    sum(cost_amount) AS cost_amount,
    count(DISTINCT order_id) AS orders,
    count(*) AS lines
FROM stg_order_lines
WHERE is_completed
GROUP BY customer_id, order_date
