-- Each customer's preferred contact channel: the channel of most of their call-centre contacts.
-- Its own table for the same reason as stg_customer_categories.
WITH channel_contacts AS (
    SELECT customer_id, channel, count(*) AS contacts
    FROM stg_interactions
    GROUP BY customer_id, channel
)
SELECT customer_id, top_values(channel, contacts, 1) AS preferred_contact_channel
FROM channel_contacts
GROUP BY customer_id
