-- Each customer's top three categories by completed net amount, and the mean discount of the
-- completed lines. Its own table (not a CTE of customer_profile): a plan of its own gets the whole
-- memory pool, where inside customer_profile this grouping shared it with seven others and spilled.
WITH category_amounts AS (
    SELECT customer_id, category, sum(net_amount) AS amount, sum(discount) AS discount_sum, count(discount) AS discounts
    FROM stg_order_lines
    WHERE is_completed
    GROUP BY customer_id, category
)
-- The decimals are summed exactly, then divided once, so avg_discount is the same double whatever
-- order the lines arrive in (a sum of doubles is not, and two engines or two partitionings would differ).
SELECT
    customer_id,
    top_values(category, amount, 3) AS top_categories,
    CAST(sum(discount_sum) AS DOUBLE) / sum(discounts) AS avg_discount
FROM category_amounts
GROUP BY customer_id
