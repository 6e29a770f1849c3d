-- The account-plan view (DESIGN.md, customer_profile): non-PII master data, buying habits,
-- preferred contact channel, and where the customer stands today. Top categories and the usual
-- order channel come from staging tables (stg_customer_categories, stg_customer_channels).
-- The "top" and "usual" columns rank (customer, value) pairs with top_values(value, weight, n):
-- the n heaviest values, ties to the smaller value, unknown (NULL) values never ranked.
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
LEFT JOIN stg_customer_categories t ON t.customer_id = c.customer_id
LEFT JOIN weekdays w ON w.customer_id = c.customer_id
LEFT JOIN stg_customer_channels oc ON oc.customer_id = c.customer_id
LEFT JOIN contact cc ON cc.customer_id = c.customer_id
LEFT JOIN customer_rfm r ON r.customer_id = c.customer_id
LEFT JOIN key_accounts k ON k.customer_id = c.customer_id
LEFT JOIN customer_churn ch ON ch.customer_id = c.customer_id
