-- Call-centre contacts started up to as_of (dates in UTC), with resolution as known at as_of.
SELECT
    interaction_id,
    upper(trim(customer_id)) AS customer_id,
    started_at,
    CAST(started_at AS DATE) AS contact_date,
    channel,
    duration_sec,
    category,
    is_complaint,
    resolved_at,
    satisfaction
FROM cc_interactions
WHERE CAST(started_at AS DATE) <= $as_of
