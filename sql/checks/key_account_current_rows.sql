-- Every customer has exactly one current period and no overlapping periods (tested in the pipeline).
SELECT
    customer_id,
    count(CASE WHEN is_current THEN 1 END) AS current_rows,
    count(*) AS periods,
    count(DISTINCT valid_from) AS distinct_starts
FROM key_account_history
GROUP BY customer_id
