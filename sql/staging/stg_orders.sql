-- One row per order up to as_of: what its completed lines are worth and how many of its lines
-- were completed, delivered or returned. Marts count orders here rather than with
-- count(DISTINCT order_id) over lines, which holds a set of order ids per group in memory.
SELECT
    order_id,
    customer_id,
    order_date,
    sum(CASE WHEN is_completed THEN net_amount END) AS completed_amount,
    sum(CASE WHEN is_completed THEN cost_amount END) AS completed_cost,
    sum(CASE WHEN is_completed THEN net_amount - cost_amount END) AS completed_margin,
    count(CASE WHEN is_completed THEN 1 END) AS completed_lines,
    count(CASE WHEN status = 'returned' THEN 1 END) AS returned_lines,
    count(CASE WHEN status IN ('completed', 'returned') THEN 1 END) AS delivered_lines
FROM stg_order_lines
GROUP BY order_id, customer_id, order_date
