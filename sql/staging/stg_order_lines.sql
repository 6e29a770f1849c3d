-- Order lines up to as_of with the conformed customer key; amounts stay decimals.
SELECT
    order_id,
    line_no,
    upper(trim(customer_id)) AS customer_id,
    order_date,
    product_id,
    category,
    quantity,
    unit_price,
    discount,
    net_amount,
    cost_amount,
    currency,
    status,
    order_channel,
    status = 'completed' AS is_completed
FROM erp_orders
WHERE order_date <= $as_of
