-- The account-plan view (DESIGN.md, customer_profile): non-PII master data, buying habits and
-- preferred contact channel (stg_customer_profile_inputs, kept from night to night), and where
-- the customer stands today: segment, key-account status and churn band from tonight's marts.
--
-- The inputs hold one row per customer each; they are combined by one grouping over a UNION ALL
-- of them rather than joins onto the customers: a grouping spills to disk under the memory limit
-- and a hash join's build side cannot (at 5M customers the build sides overran the default
-- memory limit). Each column is filled by one input only, and only_value(x) takes that one value.
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
    only_value(status) AS key_account_status,
    only_value(churn_risk) AS churn_risk
FROM (
    -- By name: each input brings its own columns, the others are NULL in its rows.
    SELECT *, 1 AS in_master FROM stg_customer_profile_inputs
    UNION ALL BY NAME
    SELECT customer_id, segment, pareto_class FROM customer_rfm
    UNION ALL BY NAME
    SELECT customer_id, is_key_account, status FROM key_accounts
    UNION ALL BY NAME
    SELECT customer_id, churn_risk FROM customer_churn
) per_input
GROUP BY customer_id
HAVING only_value(in_master) = 1  -- the customer master's customers, as a join onto it would keep
