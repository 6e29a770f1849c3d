-- Each row of the transition matrix must sum to 1 (tested in the pipeline).
SELECT from_segment, sum(probability) AS row_sum, sum(customers) AS customers
FROM segment_migration
GROUP BY from_segment
