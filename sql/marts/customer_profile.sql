-- The account-plan view (DESIGN.md, customer_profile): non-PII master data, buying habits,
-- preferred contact channel, and where the customer stands today.
WITH lines AS (
    SELECT * FROM stg_order_lines WHERE is_completed
),
categories AS (
    SELECT customer_id, category, row_number() OVER (PARTITION BY customer_id ORDER BY sum(net_amount) DESC, category) AS place
    FROM lines
    GROUP BY customer_id, category
),
top_categories AS (
    -- The three places spelled out: an ordered string_agg sorts inside every group (1.8 s more at
    -- 1M customers). concat_ws skips the places a customer has no category for.
    SELECT customer_id, concat_ws(', ',
        max(CASE WHEN place = 1 THEN category END),
        max(CASE WHEN place = 2 THEN category END),
        max(CASE WHEN place = 3 THEN category END)) AS top_categories
    FROM categories
    WHERE place <= 3
    GROUP BY customer_id
),
habits AS (
    -- The decimals summed exactly, then divided once: the same double whatever the order the
    -- lines arrive in (a sum of doubles is not, and two engines or two partitionings would differ).
    SELECT customer_id, CAST(sum(discount) AS DOUBLE) / count(discount) AS avg_discount
    FROM lines
    GROUP BY customer_id
),
weekdays AS (
    -- Orders are counted once each: an order has one date, so stg_orders holds one row per order.
    SELECT customer_id, extract(dow FROM order_date) AS weekday,
        row_number() OVER (PARTITION BY customer_id ORDER BY count(*) DESC, extract(dow FROM order_date)) AS place
    FROM stg_orders
    WHERE completed_lines > 0
    GROUP BY customer_id, extract(dow FROM order_date)
),
order_channels AS (
    -- Each order once per channel its completed lines came through. A plain grouping, where
    -- count(DISTINCT order_id) per customer and channel would keep a set of ids per group.
    SELECT customer_id, order_channel, order_id
    FROM lines
    GROUP BY customer_id, order_channel, order_id
),
channels AS (
    SELECT customer_id, order_channel,
        row_number() OVER (PARTITION BY customer_id ORDER BY count(*) DESC, order_channel) AS place
    FROM order_channels
    GROUP BY customer_id, order_channel
),
contact AS (
    SELECT customer_id, channel,
        row_number() OVER (PARTITION BY customer_id ORDER BY count(*) DESC, channel) AS place
    FROM stg_interactions
    GROUP BY customer_id, channel
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
    h.avg_discount,
    CASE CAST(w.weekday AS BIGINT)
        WHEN 0 THEN 'Sunday' WHEN 1 THEN 'Monday' WHEN 2 THEN 'Tuesday' WHEN 3 THEN 'Wednesday'
        WHEN 4 THEN 'Thursday' WHEN 5 THEN 'Friday' WHEN 6 THEN 'Saturday'
    END AS usual_order_weekday,
    oc.order_channel AS usual_order_channel,
    cc.channel AS preferred_contact_channel,
    r.segment,
    r.pareto_class,
    k.is_key_account,
    k.status AS key_account_status,
    ch.churn_risk
FROM stg_customers c
LEFT JOIN top_categories t ON t.customer_id = c.customer_id
LEFT JOIN habits h ON h.customer_id = c.customer_id
LEFT JOIN weekdays w ON w.customer_id = c.customer_id AND w.place = 1
LEFT JOIN channels oc ON oc.customer_id = c.customer_id AND oc.place = 1
LEFT JOIN contact cc ON cc.customer_id = c.customer_id AND cc.place = 1
LEFT JOIN customer_rfm r ON r.customer_id = c.customer_id
LEFT JOIN key_accounts k ON k.customer_id = c.customer_id
LEFT JOIN customer_churn ch ON ch.customer_id = c.customer_id
