-- Call-centre service per customer over the last service_window_days days (DESIGN.md, service_quality).
WITH recent AS (
    SELECT *
    FROM stg_interactions
    WHERE contact_date > $as_of - $service_window_days
),
per_customer AS (
    SELECT
        customer_id,
        count(*) AS contacts,
        count(CASE WHEN channel = 'phone' THEN 1 END) AS phone_contacts,
        count(CASE WHEN channel = 'email' THEN 1 END) AS email_contacts,
        count(CASE WHEN channel = 'web' THEN 1 END) AS web_contacts,
        count(CASE WHEN channel = 'chat' THEN 1 END) AS chat_contacts,
        count(CASE WHEN channel = 'visit' THEN 1 END) AS visit_contacts,
        count(CASE WHEN is_complaint THEN 1 END) AS complaints,
        count(CASE WHEN is_complaint AND (resolved_at IS NULL OR CAST(resolved_at AS DATE) > $as_of) THEN 1 END) AS open_complaints,
        median(CASE WHEN is_complaint AND CAST(resolved_at AS DATE) <= $as_of
            THEN (extract(epoch FROM resolved_at) - extract(epoch FROM started_at)) / 3600.0 END) AS median_resolution_hours,
        avg(CAST(satisfaction AS DOUBLE)) AS mean_satisfaction
    FROM recent
    GROUP BY customer_id
)
SELECT
    c.customer_id,
    coalesce(p.contacts, 0) AS contacts,
    coalesce(p.phone_contacts, 0) AS phone_contacts,
    coalesce(p.email_contacts, 0) AS email_contacts,
    coalesce(p.web_contacts, 0) AS web_contacts,
    coalesce(p.chat_contacts, 0) AS chat_contacts,
    coalesce(p.visit_contacts, 0) AS visit_contacts,
    coalesce(p.complaints, 0) AS complaints,
    coalesce(p.open_complaints, 0) AS open_complaints,
    p.median_resolution_hours,
    p.mean_satisfaction
FROM stg_customers c
LEFT JOIN per_customer p ON p.customer_id = c.customer_id
