-- Sample data for `rollout db seed --rows N`: N orders, N/5 customers, 200 products, about
-- 2.5 order items per order, and the mess a database without constraints collects:
-- customers without an email, duplicate emails, items with quantity 0, items whose order
-- was deleted. Deterministic (setseed); running it again adds more rows.
SELECT setseed(0.42);

CREATE TEMP TABLE seed_size ON COMMIT DROP AS
SELECT n AS orders, greatest(10, n / 5) AS customers
FROM (SELECT current_setting('rollout.seed_rows')::int AS n) AS s;

INSERT INTO customers (email, name, fax, created_at)
SELECT CASE WHEN g % 97 = 0 THEN NULL                                 -- ~1% without an email
            WHEN g % 89 = 0 THEN 'customer' || (g - 1) || '@example.com'  -- ~1% duplicates
            ELSE 'customer' || g || '@example.com' END,
       'Customer ' || g,
       CASE WHEN g % 10 = 0 THEN '+1 555 0100' END,
       now() - make_interval(days => (random() * 700)::int)
FROM seed_size, generate_series(1, customers) AS g;

INSERT INTO products (sku, name, price)
SELECT 'SKU-' || g, 'Product ' || g,
       CASE WHEN g % 25 = 0 THEN ' ' || (g % 40) || ',50'           -- legacy ' 4,50'
            ELSE to_char(1 + random() * 99, 'FM990.00') END
FROM generate_series(1, 200) AS g;

INSERT INTO orders (customer_id, status, placed_at)
SELECT (SELECT min(id) FROM customers) + (random() * (customers - 1))::bigint,
       (ARRAY['new', 'paid', 'shipped', 'delivered'])[1 + (random() * 3)::int],
       now() - make_interval(mins => (random() * 60 * 24 * 365)::int)
FROM seed_size, generate_series(1, orders) AS g;

INSERT INTO order_items (order_id, product_id, quantity, unit_price_cents)
SELECT o.id, 1 + (random() * 199)::int,
       CASE WHEN random() < 0.005 THEN 0 ELSE 1 + (random() * 4)::int END,  -- ~0.5% quantity 0
       100 + (random() * 9900)::int
FROM orders AS o, generate_series(1, 1 + (o.id % 4)::int) AS k;

-- ~0.2% of the orders were deleted by hand, leaving their items behind.
DELETE FROM orders WHERE id % 500 = 0;

INSERT INTO newsletter_signups (email)
SELECT 'reader' || g || '@example.com' FROM generate_series(1, 300) AS g;

ANALYZE customers, products, orders, order_items, newsletter_signups;
