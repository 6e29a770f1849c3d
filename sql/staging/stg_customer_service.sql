-- Each customer's call-centre contacts up to as_of, summarised for the marts' windows:
-- service_quality's figures over service_window_days, the complaints customer_churn counts over
-- churn_window_days, and the minutes customer_value charges over value_window_days. One row per
-- customer with a contact; the windows are conditions, not a filter, so one grouping serves all.
-- Seconds are summed as DECIMAL(38, 0): a BIGINT sum wraps silently past 2^63 (two contacts of
-- the largest `int` the contract admits), a 38-digit one holds 10^19 of them.
SELECT
    customer_id,
    count(CASE WHEN in_service_window THEN 1 END) AS contacts,
    count(CASE WHEN in_service_window AND channel = 'phone' THEN 1 END) AS phone_contacts,
    count(CASE WHEN in_service_window AND channel = 'email' THEN 1 END) AS email_contacts,
    count(CASE WHEN in_service_window AND channel = 'web' THEN 1 END) AS web_contacts,
    count(CASE WHEN in_service_window AND channel = 'chat' THEN 1 END) AS chat_contacts,
    count(CASE WHEN in_service_window AND channel = 'visit' THEN 1 END) AS visit_contacts,
    count(CASE WHEN in_service_window AND is_complaint THEN 1 END) AS complaints,
    count(CASE WHEN in_service_window AND is_complaint AND (resolved_at IS NULL OR CAST(resolved_at AS DATE) > $as_of)
        THEN 1 END) AS open_complaints,
    median(CASE WHEN in_service_window AND is_complaint AND CAST(resolved_at AS DATE) <= $as_of
        THEN (extract(epoch FROM resolved_at) - extract(epoch FROM started_at)) / 3600.0 END) AS median_resolution_hours,
    avg(CASE WHEN in_service_window THEN CAST(satisfaction AS DOUBLE) END) AS mean_satisfaction,
    count(CASE WHEN is_complaint AND contact_date > $as_of - $churn_window_days THEN 1 END) AS recent_complaints,
    sum(CASE WHEN contact_date > $as_of - $value_window_days THEN CAST(duration_sec AS DECIMAL(38, 0)) END) AS service_seconds
FROM (
    SELECT *, contact_date > $as_of - $service_window_days AS in_service_window
    FROM stg_interactions
) contacts
GROUP BY customer_id
