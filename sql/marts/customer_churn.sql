-- Who is slipping away (DESIGN.md, customer_churn): the BG/NBD view (p_alive, purchases expected
-- in the next churn_horizon_days), the customer's own rhythm (days since the last order against
-- the typical gap), the trend (purchases in the last churn_window_days against the window before)
-- and recent complaints. The band and the reasons that set it.
WITH params AS (SELECT * FROM model_parameters),
signals AS (
    SELECT
        h.customer_id,
        bgnbd_p_alive(p.bgnbd_r, p.bgnbd_alpha, p.bgnbd_a, p.bgnbd_b, h.x, h.t_x, h.t_cal) AS p_alive,
        bgnbd_expected_purchases(p.bgnbd_r, p.bgnbd_alpha, p.bgnbd_a, p.bgnbd_b, h.x, h.t_x, h.t_cal, $churn_horizon_days / 7.0)
            AS expected_purchases_90d,
        $as_of - h.last_purchase AS days_since_last_order,
        CASE WHEN h.x > 0 THEN h.t_x * 7.0 / h.x END AS typical_gap_days,
        h.purchases_current,
        h.purchases_previous,
        h.purchases_current - h.purchases_previous AS frequency_change,
        coalesce(s.recent_complaints, 0) AS recent_complaints
    FROM params p  -- the one-row side first: a cross join holds its left side in memory
    CROSS JOIN stg_customer_history h
    LEFT JOIN stg_customer_service s ON s.customer_id = h.customer_id
),
flags AS (
    SELECT
        *,
        p_alive < $churn_high_p_alive AS dying,
        p_alive < $churn_medium_p_alive AS fading,
        typical_gap_days > 0 AND days_since_last_order > $churn_overdue_factor * typical_gap_days AS overdue,
        purchases_previous > 0 AND purchases_current * 2 <= purchases_previous AS slowing,
        recent_complaints >= $churn_complaints AS complaining
    FROM signals
)
SELECT
    customer_id,
    p_alive,
    expected_purchases_90d,
    days_since_last_order,
    typical_gap_days,
    CASE WHEN typical_gap_days > 0 THEN days_since_last_order / typical_gap_days END AS overdue_ratio,
    purchases_current,
    purchases_previous,
    frequency_change,
    recent_complaints,
    CASE
        WHEN coalesce(dying, false) OR (coalesce(overdue, false) AND coalesce(slowing, false)) THEN 'high'
        WHEN coalesce(fading, false) OR coalesce(overdue, false) OR coalesce(slowing, false) OR complaining THEN 'medium'
        ELSE 'low'
    END AS churn_risk,
    concat_ws('; ',
        CASE WHEN dying THEN 'p_alive below ' || CAST($churn_high_p_alive AS VARCHAR)
             WHEN fading THEN 'p_alive below ' || CAST($churn_medium_p_alive AS VARCHAR) END,
        CASE WHEN overdue THEN 'overdue: ' || CAST(days_since_last_order AS VARCHAR) || ' days since the last order, typical gap '
             || CAST(CAST(round(typical_gap_days) AS BIGINT) AS VARCHAR) END,
        CASE WHEN slowing THEN 'purchases down from ' || CAST(purchases_previous AS VARCHAR) || ' to '
             || CAST(purchases_current AS VARCHAR) END,
        CASE WHEN complaining THEN CAST(recent_complaints AS VARCHAR) || ' complaints' END
    ) AS churn_reasons
FROM flags
