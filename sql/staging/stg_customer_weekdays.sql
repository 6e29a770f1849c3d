-- Each customer's usual order weekday: the day of most of their orders with completed lines.
-- Its own table for the same reason as stg_customer_categories.
WITH weekday_orders AS (
    -- Orders are counted once each: an order has one date, so stg_orders holds one row per order.
    -- The day as its digit (Sunday 0), so a tie goes to the earlier day of the week.
    SELECT customer_id, CAST(CAST(extract(dow FROM order_date) AS BIGINT) AS VARCHAR) AS weekday, count(*) AS orders
    FROM stg_orders
    WHERE completed_lines > 0
    GROUP BY 1, 2
),
weekdays AS (
    SELECT customer_id, top_values(weekday, orders, 1) AS weekday
    FROM weekday_orders
    GROUP BY customer_id
)
SELECT
    customer_id,
    CASE weekday
        WHEN '0' THEN 'Sunday' WHEN '1' THEN 'Monday' WHEN '2' THEN 'Tuesday' WHEN '3' THEN 'Wednesday'
        WHEN '4' THEN 'Thursday' WHEN '5' THEN 'Friday' WHEN '6' THEN 'Saturday'
    END AS usual_order_weekday
FROM weekdays
