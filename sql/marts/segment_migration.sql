-- How active customers (a purchase in the RFM window) moved between RFM segments since the
-- previous snapshot (DESIGN.md, segment_migration): a Markov transition matrix whose rows sum to 1,
-- from 'new' for customers who became active and to 'lost' for customers who stopped being active.
WITH previous AS (
    SELECT customer_id, segment
    FROM customer_rfm_history
    WHERE as_of = (SELECT max(as_of) FROM customer_rfm_history) AND frequency > 0
),
current AS (
    SELECT customer_id, segment FROM customer_rfm WHERE frequency > 0
),
moves AS (
    SELECT
        coalesce(p.segment, 'new') AS from_segment,
        coalesce(c.segment, 'lost') AS to_segment
    FROM current c
    FULL OUTER JOIN previous p ON p.customer_id = c.customer_id
),
counts AS (
    SELECT from_segment, to_segment, count(*) AS customers
    FROM moves
    GROUP BY from_segment, to_segment
)
SELECT
    from_segment,
    to_segment,
    customers,
    CAST(customers AS DOUBLE) / CAST(sum(customers) OVER (PARTITION BY from_segment) AS DOUBLE) AS probability
FROM counts
