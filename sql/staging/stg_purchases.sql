-- One purchase occasion per customer-day (orders with completed lines), as RFM and the models
-- count them.
SELECT
    customer_id,
    order_date AS purchase_date,
    sum(completed_amount) AS net_amount,
    sum(completed_cost) AS cost_amount,
    count(*) AS orders,
    sum(completed_lines) AS lines
FROM stg_orders
WHERE completed_lines > 0
GROUP BY customer_id, order_date
