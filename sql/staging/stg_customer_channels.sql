-- Each customer's usual order channel: the one most of their orders with completed lines came
-- through. Its own table for the same reason as stg_customer_categories.
WITH order_channels AS (
    -- Each order once per channel its completed lines came through. A plain grouping, where
    -- count(DISTINCT order_id) per customer and channel would keep a set of ids per group.
    SELECT customer_id, order_channel, order_id
    FROM stg_order_lines
    WHERE is_completed
    GROUP BY customer_id, order_channel, order_id
),
channel_orders AS (
    SELECT customer_id, order_channel, count(*) AS orders
    FROM order_channels
    GROUP BY customer_id, order_channel
)
SELECT customer_id, top_values(order_channel, orders, 1) AS order_channel
FROM channel_orders
GROUP BY customer_id
