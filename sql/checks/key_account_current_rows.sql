-- Every customer has exactly one current period and no overlapping periods (tested in the pipeline).
-- Periods are counted per start first: count(DISTINCT valid_from) per customer kept a set per
-- customer, which made this check slow and the night's memory peak at scale.
WITH starts AS (
    SELECT customer_id, valid_from, count(CASE WHEN is_current THEN 1 END) AS current_rows, count(*) AS periods
    FROM key_account_history
    GROUP BY customer_id, valid_from
)
SELECT
    customer_id,
    sum(current_rows) AS current_rows,
    sum(periods) AS periods,
    count(*) AS distinct_starts
FROM starts
GROUP BY customer_id
