-- Call-centre service per customer over the last service_window_days days (DESIGN.md,
-- service_quality): every customer of the master, those without contacts in the window with zero
-- counts. The figures are kept from night to night in stg_customer_service.
SELECT
    c.customer_id,
    coalesce(s.contacts, 0) AS contacts,
    coalesce(s.phone_contacts, 0) AS phone_contacts,
    coalesce(s.email_contacts, 0) AS email_contacts,
    coalesce(s.web_contacts, 0) AS web_contacts,
    coalesce(s.chat_contacts, 0) AS chat_contacts,
    coalesce(s.visit_contacts, 0) AS visit_contacts,
    coalesce(s.complaints, 0) AS complaints,
    coalesce(s.open_complaints, 0) AS open_complaints,
    s.median_resolution_hours,
    s.mean_satisfaction
FROM stg_customers c
LEFT JOIN stg_customer_service s ON s.customer_id = c.customer_id
