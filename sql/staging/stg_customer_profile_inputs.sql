-- What customer_profile needs of each customer of the master that changes only with their own
-- rows: non-PII master data and buying habits (top categories, average discount, usual order
-- weekday and channel, preferred contact channel). Kept from night to night, so the mart joins
-- it with tonight's segment, key-account status and churn band only.
--
-- One grouping over a UNION ALL of the one-row-per-customer inputs rather than joins onto the
-- customers (a grouping spills under the memory limit, a hash join's build side cannot); each
-- column is filled by one input, and only_value(x) takes that one value (a second, different one
-- would be an error, not hidden).
SELECT
    customer_id,
    only_value(customer_type) AS customer_type,
    only_value(industry) AS industry,
    only_value(region) AS region,
    only_value(account_manager) AS account_manager,
    only_value(credit_rating) AS credit_rating,
    only_value(annual_revenue) AS annual_revenue,
    only_value(top_categories) AS top_categories,
    only_value(avg_discount) AS avg_discount,
    only_value(usual_order_weekday) AS usual_order_weekday,
    only_value(order_channel) AS usual_order_channel,
    only_value(preferred_contact_channel) AS preferred_contact_channel
FROM (
    -- By name: each input brings its own columns, the others are NULL in its rows.
    SELECT customer_id, 1 AS in_master, customer_type, industry, region, account_manager, credit_rating, annual_revenue
    FROM stg_customers
    UNION ALL BY NAME
    SELECT customer_id, top_categories, avg_discount FROM stg_customer_categories
    UNION ALL BY NAME
    SELECT customer_id, usual_order_weekday FROM stg_customer_weekdays
    UNION ALL BY NAME
    SELECT customer_id, order_channel FROM stg_customer_channels
    UNION ALL BY NAME
    SELECT customer_id, preferred_contact_channel FROM stg_customer_contact_channels
) per_input
GROUP BY customer_id
HAVING only_value(in_master) = 1  -- the customer master's customers, as a join onto it would keep
