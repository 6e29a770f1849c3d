-- What customer_value needs of each customer of the master, over the value window ending at
-- as_of (DESIGN.md, customer_value): sales, margin, orders, returns, freight, deliveries and
-- call-centre time, and the purchase history the models read.
--
-- Every figure in one grouping over the rows of its inputs, one branch each, rather than a
-- grouping per input joined onto the customers: a grouping spills to disk under the memory
-- limit and a hash join's build side cannot, and at 5M customers the four build sides alone
-- overran the default limit. Each column is filled by one branch only.
SELECT
    customer_id,
    max(created_date) AS created_date,
    sum(completed_amount) AS revenue,
    sum(completed_margin) AS gross_margin,
    count(CASE WHEN completed_lines > 0 THEN 1 END) AS order_count,
    sum(returned_lines) AS returned_lines,
    sum(delivered_lines) AS delivered_lines,
    sum(freight_cost) AS freight_cost,
    count(CASE WHEN delivered_date IS NOT NULL THEN 1 END) AS delivered,
    count(CASE WHEN delivered_date IS NOT NULL AND delivered_date <= promised_date THEN 1 END) AS on_time,
    sum(service_seconds) AS service_seconds,
    max(first_purchase) AS first_purchase,
    max(x) AS x,
    max(t_x) AS t_x,
    max(m) AS m
FROM (
    -- By name: each input brings its own columns, the others are NULL in its rows.
    SELECT customer_id, 1 AS in_master, created_date FROM stg_customers
    UNION ALL BY NAME
    SELECT customer_id, completed_amount, completed_margin, completed_lines, returned_lines, delivered_lines
    FROM stg_orders
    WHERE order_date > $as_of - $value_window_days
    UNION ALL BY NAME
    SELECT customer_id, freight_cost, delivered_date, promised_date
    FROM stg_shipments
    WHERE ship_date > $as_of - $value_window_days
    UNION ALL BY NAME
    SELECT customer_id, service_seconds FROM stg_customer_service
    UNION ALL BY NAME
    SELECT customer_id, first_purchase, x, t_x, m FROM stg_customer_purchase_summary
) per_input
GROUP BY customer_id
HAVING max(in_master) = 1  -- the customer master's customers, as a join onto it would keep
