-- The account-plan view (DESIGN.md, customer_profile): non-PII master data, buying habits,
-- preferred contact channel, and where the customer stands today.
WITH lines AS (
    SELECT * FROM stg_order_lines WHERE is_completed
),
-- The "top" and "usual" columns rank (customer, value) pairs with top_values(value, weight, n):
-- the n heaviest values, ties to the smaller value, unknown (NULL) values never ranked.
category_amounts AS (
    SELECT customer_id, category, sum(net_amount) AS amount, sum(discount) AS discount_sum, count(discount) AS discounts
    FROM lines
    GROUP BY customer_id, category
),
categories AS (
    -- Habits from the same grouping, not a second pass over the lines: the decimals are summed
    -- exactly, then divided once, so avg_discount is the same double whatever order the lines
    -- arrive in (a sum of doubles is not, and two engines or two partitionings would differ).
    SELECT
        customer_id,
        top_values(category, amount, 3) AS top_categories,
        CAST(sum(discount_sum) AS DOUBLE) / sum(discounts) AS avg_discount
    FROM category_amounts
    GROUP BY customer_id
),
weekday_orders AS (
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
),
order_channels AS (
    -- Each order once per channel its completed lines came through. A plain grouping, where
    -- count(DISTINCT order_id) per customer and channel would keep a set of ids per group.
    SELECT customer_id, order_channel, order_id
    FROM lines
    GROUP BY customer_id, order_channel, order_id
),
channel_orders AS (
    SELECT customer_id, order_channel, count(*) AS orders
    FROM order_channels
    GROUP BY customer_id, order_channel
),
channels AS (
    SELECT customer_id, top_values(order_channel, orders, 1) AS order_channel
    FROM channel_orders
    GROUP BY customer_id
),
channel_contacts AS (
    SELECT customer_id, channel, count(*) AS contacts
    FROM stg_interactions
    GROUP BY customer_id, channel
),
contact AS (
    SELECT customer_id, top_values(channel, contacts, 1) AS channel
    FROM channel_contacts
    GROUP BY customer_id
)
SELECT
    c.customer_id,
    c.customer_type,
    c.industry,
    c.region,
    c.account_manager,
    c.credit_rating,
    c.annual_revenue,
    t.top_categories,
    t.avg_discount,
    CASE w.weekday
        WHEN '0' THEN 'Sunday' WHEN '1' THEN 'Monday' WHEN '2' THEN 'Tuesday' WHEN '3' THEN 'Wednesday'
        WHEN '4' THEN 'Thursday' WHEN '5' THEN 'Friday' WHEN '6' THEN 'Saturday'
    END AS usual_order_weekday,
    oc.order_channel AS usual_order_channel,
    cc.channel AS preferred_contact_channel,
    r.segment,
    r.pareto_class,
    k.is_key_account,
    k.status AS key_account_status,
    ch.churn_risk
FROM stg_customers c
LEFT JOIN categories t ON t.customer_id = c.customer_id
LEFT JOIN weekdays w ON w.customer_id = c.customer_id
LEFT JOIN channels oc ON oc.customer_id = c.customer_id
LEFT JOIN contact cc ON cc.customer_id = c.customer_id
LEFT JOIN customer_rfm r ON r.customer_id = c.customer_id
LEFT JOIN key_accounts k ON k.customer_id = c.customer_id
LEFT JOIN customer_churn ch ON ch.customer_id = c.customer_id
