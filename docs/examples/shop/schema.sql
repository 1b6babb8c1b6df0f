-- The shop's database as it is today: no NOT NULLs beyond the keys, no UNIQUE on email,
-- no foreign keys, prices stored as text.
CREATE TABLE customers (
    id         bigserial PRIMARY KEY,
    email      text,
    name       text,
    fax        text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE products (
    id    bigserial PRIMARY KEY,
    sku   text NOT NULL,
    name  text NOT NULL,
    price text              -- '19.99', and some legacy ' 4,50'
);

CREATE TABLE orders (
    id          bigserial PRIMARY KEY,
    customer_id bigint,
    status      text NOT NULL DEFAULT 'new',
    placed_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE order_items (
    id               bigserial PRIMARY KEY,
    order_id         bigint NOT NULL,
    product_id       bigint NOT NULL,
    quantity         integer NOT NULL,
    unit_price_cents integer NOT NULL
);

-- A table the old newsletter tool wrote; nothing reads it any more.
CREATE TABLE newsletter_signups (
    id        bigserial PRIMARY KEY,
    email     text NOT NULL,
    signed_up timestamptz NOT NULL DEFAULT now()
);
