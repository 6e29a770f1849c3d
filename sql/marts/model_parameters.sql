-- The customer-base models fitted on all purchase history up to as_of: BG/NBD (purchases and
-- dropout) and Gamma-Gamma (spend per purchase). NULL parameters when the data cannot support a fit.
WITH fits AS (
    SELECT
        bgnbd_fit(x, t_x, t_cal) AS bgnbd,
        gamma_gamma_fit(x, m) AS spend
    FROM stg_customer_history
)
SELECT
    bgnbd['r'] AS bgnbd_r,
    bgnbd['alpha'] AS bgnbd_alpha,
    bgnbd['a'] AS bgnbd_a,
    bgnbd['b'] AS bgnbd_b,
    bgnbd['ll'] AS bgnbd_ll,
    bgnbd['n'] AS bgnbd_customers,
    spend['p'] AS gg_p,
    spend['q'] AS gg_q,
    spend['v'] AS gg_v,
    spend['ll'] AS gg_ll,
    spend['n'] AS gg_customers
FROM fits
