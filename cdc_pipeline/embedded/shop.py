"""The embedded default's source data: a small shop (customers with PII, orders, payments) that keeps changing."""

from __future__ import annotations

import json
import random
from contextlib import closing

import psycopg2

SCHEMA = "shop"
TABLES = ("customers", "orders", "payments")

SHOP_SCHEMA = [
    f"CREATE SCHEMA {SCHEMA}",
    f"CREATE TYPE {SCHEMA}.order_status AS ENUM ('new', 'paid', 'shipped', 'cancelled')",
    f"""CREATE TABLE {SCHEMA}.customers (
        id serial PRIMARY KEY, full_name text NOT NULL, email text NOT NULL, phone text, birth_date date,
        home_address text, created_at timestamptz NOT NULL DEFAULT now())""",
    f"""CREATE TABLE {SCHEMA}.orders (
        id serial PRIMARY KEY, customer_id integer NOT NULL REFERENCES {SCHEMA}.customers,
        status {SCHEMA}.order_status NOT NULL DEFAULT 'new', total numeric(12, 2) NOT NULL,
        placed_at timestamptz NOT NULL DEFAULT now(), items jsonb)""",
    f"""CREATE TABLE {SCHEMA}.payments (
        id bigserial PRIMARY KEY, order_id integer NOT NULL REFERENCES {SCHEMA}.orders, card_number text,
        amount numeric(12, 2) NOT NULL, paid_at timestamptz)""",
]


def shop_exists(dsn: str) -> bool:
    with closing(psycopg2.connect(dsn)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.payments",))
        return bool(cursor.fetchone()[0])


def create_shop(dsn: str) -> None:
    with closing(psycopg2.connect(dsn)) as connection, connection, connection.cursor() as cursor:
        for statement in SHOP_SCHEMA:
            cursor.execute(statement)


def change_the_shop(dsn: str, rng: random.Random, new_customers: int = 20) -> None:
    """One round of shop life, in a few transactions: sign-ups with first orders, payments, shipping,
    a changed address, and (sometimes) cancelled orders removed."""
    with closing(psycopg2.connect(dsn)) as connection:
        with connection, connection.cursor() as cursor:
            for _ in range(new_customers):
                n = rng.randrange(10**6)
                cursor.execute(
                    f"INSERT INTO {SCHEMA}.customers (full_name, email, phone, birth_date, home_address)"
                    " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                    (
                        f"Customer {n}",
                        f"customer{n}@example.com",
                        f"+1-555-{n % 10000:04d}",
                        f"19{rng.randrange(50, 99)}-0{rng.randrange(1, 9)}-1{rng.randrange(0, 9)}",
                        f"{n} Main Street",
                    ),
                )
                customer = cursor.fetchone()[0]
                cursor.execute(
                    f"INSERT INTO {SCHEMA}.orders (customer_id, total, items) VALUES (%s, %s, %s)",
                    (
                        customer,
                        f"{rng.randrange(100, 99999) / 100:.2f}",
                        json.dumps({"sku": f"A-{n}", "qty": rng.randrange(1, 5)}),
                    ),
                )
        with connection, connection.cursor() as cursor:
            cursor.execute(f"UPDATE {SCHEMA}.orders SET status = 'paid' WHERE status = 'new' AND id % 2 = 0")
            cursor.execute(
                f"INSERT INTO {SCHEMA}.payments (order_id, card_number, amount, paid_at)"
                f" SELECT id, '4111111111111111', total, now() FROM {SCHEMA}.orders o WHERE status = 'paid'"
                f" AND NOT EXISTS (SELECT 1 FROM {SCHEMA}.payments p WHERE p.order_id = o.id)"
            )
        with connection, connection.cursor() as cursor:
            cursor.execute(f"UPDATE {SCHEMA}.orders SET status = 'shipped' WHERE status = 'paid' AND id % 3 = 0")
            cursor.execute(
                f"UPDATE {SCHEMA}.customers SET home_address = %s WHERE id = (SELECT max(id) FROM {SCHEMA}.customers)",
                (f"{rng.randrange(10**4)} Moved Avenue",),
            )
            if rng.random() < 0.5:
                cursor.execute(
                    f"UPDATE {SCHEMA}.orders SET status = 'cancelled' WHERE status = 'new' AND id % 5 = 1"
                    f" AND NOT EXISTS (SELECT 1 FROM {SCHEMA}.payments p WHERE p.order_id = orders.id)"
                )
                cursor.execute(f"DELETE FROM {SCHEMA}.orders WHERE status = 'cancelled'")
