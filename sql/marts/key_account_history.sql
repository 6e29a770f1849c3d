-- Key-account membership as a type-2 slowly changing dimension: one row per customer and period
-- with the same is_key_account, valid_from … valid_to (inclusive; NULL while current). Built from
-- the previous snapshot of this table and today's key_accounts.
WITH previous AS (
    SELECT customer_id, is_key_account, valid_from, valid_to, is_current
    FROM key_account_history_history
    WHERE as_of = (SELECT max(as_of) FROM key_account_history_history)
),
today AS (SELECT customer_id, is_key_account FROM key_accounts),
closed AS (
    -- Periods that ended before today stay as they were.
    SELECT customer_id, is_key_account, valid_from, valid_to FROM previous WHERE NOT is_current
),
carried AS (
    -- Current periods: unchanged ones stay open; changed (or vanished) ones close yesterday.
    SELECT
        p.customer_id,
        p.is_key_account,
        p.valid_from,
        CASE WHEN t.customer_id IS NOT NULL AND t.is_key_account = p.is_key_account THEN CAST(NULL AS DATE)
             ELSE $as_of - 1 END AS valid_to
    FROM previous p
    LEFT JOIN today t ON t.customer_id = p.customer_id
    WHERE p.is_current
),
opened AS (
    -- Customers whose value changed today, or who are new, start a period today.
    SELECT t.customer_id, t.is_key_account, $as_of AS valid_from, CAST(NULL AS DATE) AS valid_to
    FROM today t
    LEFT JOIN previous p ON p.customer_id = t.customer_id AND p.is_current
    WHERE p.customer_id IS NULL OR p.is_key_account <> t.is_key_account
),
periods AS (
    SELECT * FROM closed
    UNION ALL SELECT * FROM carried
    UNION ALL SELECT * FROM opened
)
SELECT customer_id, is_key_account, valid_from, valid_to, valid_to IS NULL AS is_current
FROM periods
