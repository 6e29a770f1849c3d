-- Latest state of each shipment shipped up to as_of.
SELECT
    shipment_id,
    order_id,
    upper(trim(customer_id)) AS customer_id,
    ship_date,
    promised_date,
    CASE WHEN delivered_date <= $as_of THEN delivered_date END AS delivered_date,
    carrier,
    freight_cost,
    status,
    returned_qty,
    delivered_date > promised_date AS is_late
FROM scm_shipments
WHERE ship_date <= $as_of
