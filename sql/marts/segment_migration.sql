-- How customers moved between RFM segments since the previous snapshot (DESIGN.md,
-- segment_migration): a Markov transition matrix whose rows sum to 1, with 'new' for customers
-- not in the previous snapshot and 'lost' for customers no longer in this one.
WITH previous AS (
    SELECT customer_id, segment
    FROM customer_rfm_history
    WHERE as_of = (SELECT max(as_of) FROM customer_rfm_history)
),
moves AS (
    SELECT
        coalesce(p.segment, 'new') AS from_segment,
        coalesce(c.segment, 'lost') AS to_segment
    FROM customer_rfm c
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
