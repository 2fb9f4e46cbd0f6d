"""The stack itself: both routes reach the database as `app`, and a protected column
reads as plaintext for `app` and as ciphertext for the superuser."""
import psycopg2


def test_routes_reach_the_database_and_protection_holds(stack, route):
    table = f"smoke_{route.name}"
    conn = psycopg2.connect(host=route.host, port=route.port, user=route.user, password=route.password,
                            dbname=route.dbname)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, email text UNIQUE)")
    stack.protect(table, "email")
    with conn.cursor() as cur:
        cur.execute(f"INSERT INTO {table} (email) VALUES (%s) RETURNING id, email", ["a@example.org"])
        assert cur.fetchone()[1] == "a@example.org"
        cur.execute(f"SELECT id FROM {table} WHERE email = %s", ["a@example.org"])
        assert cur.rowcount == 1
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] == "app"
    conn.close()
    stack.assert_sealed(table, "email", ["a@example.org"])
