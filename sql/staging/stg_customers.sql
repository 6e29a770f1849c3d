-- Customer master, one row per customer, latest version up to as_of, PII left behind in raw/.
SELECT
    upper(trim(customer_id)) AS customer_id,
    customer_type,
    industry,
    region,
    account_manager,
    credit_rating,
    annual_revenue,
    created_date,
    load_date AS master_updated
FROM erp_customers
