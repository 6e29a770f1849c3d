-- The account-plan view (DESIGN.md, customer_profile): non-PII master data, buying habits,
-- preferred contact channel, and where the customer stands today. The habits come from staging
-- tables (stg_customer_categories, _weekdays, _channels, _contact_channels), each grouping in a
-- plan of its own with the whole memory pool. The "top" and "usual" columns rank (customer, value)
-- pairs with top_values(value, weight, n): the n heaviest values, ties to the smaller value,
-- unknown (NULL) values never ranked.
--
-- Each input holds one row per customer; they are combined by one grouping over a UNION ALL of
-- them rather than seven joins onto the customers: a grouping spills to disk under the memory
-- limit and a hash join's build side cannot (at 5M customers the build sides overran the
-- default 1 GiB, as in customer_value). Each column is filled by one branch only, and
-- only_value(x) takes that one value (a second, different one would be an error, not hidden).
WITH per_customer AS (
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
        only_value(usual_order_channel) AS usual_order_channel,
        only_value(preferred_contact_channel) AS preferred_contact_channel,
        only_value(segment) AS segment,
        only_value(pareto_class) AS pareto_class,
        only_value(is_key_account) AS is_key_account,
        only_value(key_account_status) AS key_account_status,
        only_value(churn_risk) AS churn_risk
    FROM (
        -- The first branch names and types the columns (an untyped NULL cannot be aggregated).
        SELECT customer_id, 1 AS in_master, customer_type, industry, region, account_manager, credit_rating, annual_revenue,
            CAST(NULL AS VARCHAR) AS top_categories, CAST(NULL AS DOUBLE) AS avg_discount,
            CAST(NULL AS VARCHAR) AS usual_order_weekday, CAST(NULL AS VARCHAR) AS usual_order_channel,
            CAST(NULL AS VARCHAR) AS preferred_contact_channel, CAST(NULL AS VARCHAR) AS segment,
            CAST(NULL AS VARCHAR) AS pareto_class, CAST(NULL AS BOOLEAN) AS is_key_account,
            CAST(NULL AS VARCHAR) AS key_account_status, CAST(NULL AS VARCHAR) AS churn_risk
        FROM stg_customers
        UNION ALL
        SELECT customer_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            top_categories, avg_discount, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
        FROM stg_customer_categories
        UNION ALL
        SELECT customer_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, usual_order_weekday, NULL, NULL, NULL, NULL, NULL, NULL, NULL
        FROM stg_customer_weekdays
        UNION ALL
        SELECT customer_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, order_channel, NULL, NULL, NULL, NULL, NULL, NULL
        FROM stg_customer_channels
        UNION ALL
        SELECT customer_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, preferred_contact_channel, NULL, NULL, NULL, NULL, NULL
        FROM stg_customer_contact_channels
        UNION ALL
        SELECT customer_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, segment, pareto_class, NULL, NULL, NULL
        FROM customer_rfm
        UNION ALL
        SELECT customer_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, is_key_account, status, NULL
        FROM key_accounts
        UNION ALL
        SELECT customer_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, churn_risk
        FROM customer_churn
    ) per_input
    GROUP BY customer_id
    HAVING only_value(in_master) = 1  -- the customer master's customers, as a join onto it would keep
)
SELECT
    customer_id,
    customer_type,
    industry,
    region,
    account_manager,
    credit_rating,
    annual_revenue,
    top_categories,
    avg_discount,
    usual_order_weekday,
    usual_order_channel,
    preferred_contact_channel,
    segment,
    pareto_class,
    is_key_account,
    key_account_status,
    churn_risk
FROM per_customer
