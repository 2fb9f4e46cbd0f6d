"""Supabase-style roles end to end (issue 11 part 2): PostgREST's `authenticator`
switching per request to `anon`, `authenticated`, `service_role` or a tenant's role,
row-level security on a table with protected columns, and tenant isolation by per-key
privileges that holds even when row-level security is misconfigured -- tested as the
roles themselves, straight to PostgreSQL and through pgbouncer in transaction pooling mode.

The recipe (what a platform sets up; docs/access.md, "The Supabase recipe"):

Roles (the platform's superuser, once):
- `anon`, `authenticated` NOLOGIN NOINHERIT; `service_role` NOLOGIN NOINHERIT BYPASSRLS.
- `authenticator` LOGIN NOINHERIT, member of anon, authenticated, service_role (and of
  every tenant role, below). It inherits nothing: on its own it cannot read the tables.
- `supa_admin` LOGIN CREATEROLE, **not** a superuser (Supabase's `postgres`): CREATE on
  schema public, EXECUTE on create_key, grant_key, revoke_key, protect_column, and the key
  privilege `admin` on the pattern `tenant_*` (envelope.grant_key('tenant_*', 'supa_admin',
  'admin')). `admin` gives it no encrypt or decrypt: it reads its tables' protected
  columns as ciphertext.
- EXECUTE on envelope.unseal, encrypt_field, decrypt_field for anon, authenticated,
  service_role: the function is not the gate, the key privilege is.

Per tenant N (the admin): a key `tenant_N`, a NOLOGIN role `tenant_N_user` IN ROLE
authenticated (inherits authenticated's table privileges) and granted to authenticator,
holding `encrypt` and `decrypt` on `tenant_N` only, and `decrypt` on the column's blind
key `tenant_blind` (needed for `WHERE email = $1`). The JWT of a tenant's user carries
`"role": "tenant_N_user"` and `"tenant_id": N`. Key privileges go to the tenant roles,
never to `authenticated` (every tenant role inherits from it). `service_role` holds
`decrypt` on `tenant_*`; `anon` holds no key privilege.

Table (the admin, as its owner): `profiles(id bigserial pk, tenant_id int, user_id uuid,
email text, ssn text, note envelope.encrypted_text, UNIQUE (tenant_id, email))`; email and
ssn protected under the per-row key `tenant_{}` from `tenant_id`, bound to `id`; email with
a blind index keyed by `tenant_blind` (protect_column needs `encrypt` on it: the admin
grants it to itself for the call), ssn without; RLS enabled with a policy TO authenticated
reading the tenant from `nullif(current_setting('request.jwt.claims', true), '')::jsonb
->> 'tenant_id'`; SELECT/INSERT/UPDATE/DELETE granted to anon, authenticated, service_role.

A request is one transaction, as PostgREST sends it:
    BEGIN; SET LOCAL ROLE <role>; SELECT set_config('request.jwt.claims', <json>, true);
    <query>; COMMIT;
(or role and claims in one `SELECT set_config('role', ..., true), set_config(...)`, as
PostgREST 10+ sends them; the per-request test runs both).

What holds (asserted below, direct and through pgbouncer): a tenant's role writes
plaintext and reads and searches its own rows in plaintext and cannot see other tenants'
rows; with the policy replaced by USING (true) or RLS disabled, it sees other tenants'
rows only as `penv1:` ciphertext, unseal/decrypt_field of them and writes under their
keys fail with 42501; anon sees nothing, or ciphertext, and decrypts nothing;
service_role reads every tenant in plaintext; role and claims do not outlive their
request on a pooled server connection. What does not hold without RLS: the blind index
is one per column, so a tenant role (decrypt on the blind key) can test whether another
tenant stores a given email (pinned by test_blind_index_is_an_equality_oracle_without_rls).
"""

from __future__ import annotations

import contextlib
import json
import uuid

import psycopg2
import psycopg2.extensions
import pytest

from pgcluster import pg_error

AUTHENTICATOR = "authenticator"
AUTHENTICATOR_PASSWORD = "authenticator-secret"
ADMIN = "supa_admin"
ADMIN_PASSWORD = "supa-admin-secret"
POOL1 = "app_pool1"  # pgbouncer database alias for `app` with one server connection per user
TENANTS = (1, 2)
BLIND_KEY = "tenant_blind"

TENANT_FILTER = ("tenant_id = (nullif(current_setting('request.jwt.claims', true), '')::jsonb "
                 "->> 'tenant_id')::int")
GOOD_POLICY = (f"CREATE POLICY tenant_rows ON profiles TO authenticated "
               f"USING ({TENANT_FILTER}) WITH CHECK ({TENANT_FILTER})")

# The platform's one-time setup, as the superuser.
PLATFORM_SETUP = [
    "CREATE ROLE anon NOLOGIN NOINHERIT",
    "CREATE ROLE authenticated NOLOGIN NOINHERIT",
    "CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS",
    f"CREATE ROLE {AUTHENTICATOR} LOGIN NOINHERIT PASSWORD '{AUTHENTICATOR_PASSWORD}'",
    f"GRANT anon, authenticated, service_role TO {AUTHENTICATOR}",
    f"CREATE ROLE {ADMIN} LOGIN CREATEROLE PASSWORD '{ADMIN_PASSWORD}'",
    f"GRANT CREATE ON SCHEMA public TO {ADMIN}",
    "GRANT EXECUTE ON FUNCTION envelope.create_key(text, text, text), "
    "envelope.grant_key(text, regrole, text), envelope.revoke_key(text, regrole, text), "
    "envelope.protect_column(regclass, name, text, name, name, boolean, integer, text) "
    f"TO {ADMIN}",
    "GRANT EXECUTE ON FUNCTION envelope.unseal(envelope.protected_text), "
    "envelope.encrypt_field(text, text, text), envelope.decrypt_field(envelope.encrypted_text, text) "
    "TO anon, authenticated, service_role",
    f"SELECT envelope.grant_key('tenant_*', '{ADMIN}', 'admin')",
]


def tenant_role(n: int) -> str:
    return f"tenant_{n}_user"


# Everything else, as supa_admin (a non-superuser).
ADMIN_SETUP = [
    *(f"SELECT envelope.create_key('tenant_{n}')" for n in TENANTS),
    f"SELECT envelope.create_key('{BLIND_KEY}')",
    *(q for n in TENANTS for q in (
        f"CREATE ROLE {tenant_role(n)} NOLOGIN IN ROLE authenticated",
        f"GRANT {tenant_role(n)} TO {AUTHENTICATOR}",
        f"SELECT envelope.grant_key('tenant_{n}', '{tenant_role(n)}', 'encrypt')",
        f"SELECT envelope.grant_key('tenant_{n}', '{tenant_role(n)}', 'decrypt')",
        f"SELECT envelope.grant_key('{BLIND_KEY}', '{tenant_role(n)}', 'decrypt')")),
    "SELECT envelope.grant_key('tenant_*', 'service_role', 'decrypt')",
    "CREATE TABLE profiles (id bigserial PRIMARY KEY, tenant_id int NOT NULL, "
    "user_id uuid NOT NULL, email text, ssn text, note envelope.encrypted_text, "
    "UNIQUE (tenant_id, email))",  # unique per tenant: a global UNIQUE (email) would tell
    # a tenant (23505) that another tenant has the address
    # protect_column wants `encrypt` on the blind key (`admin` on tenant_* covers the key
    # template, not the blind key): the admin grants it to itself for the call, then revokes it.
    f"SELECT envelope.grant_key('{BLIND_KEY}', '{ADMIN}', 'encrypt')",
    "SELECT envelope.protect_column('profiles', 'email', 'tenant_{}', key_column => 'tenant_id', "
    f"context_column => 'id', blind_key => '{BLIND_KEY}')",
    "SELECT envelope.protect_column('profiles', 'ssn', 'tenant_{}', key_column => 'tenant_id', "
    "context_column => 'id', blind_index => false)",
    f"SELECT envelope.revoke_key('{BLIND_KEY}', '{ADMIN}', 'encrypt')",
    "ALTER TABLE profiles ENABLE ROW LEVEL SECURITY",
    GOOD_POLICY,
    "GRANT SELECT, INSERT, UPDATE, DELETE ON profiles TO anon, authenticated, service_role",
    "GRANT USAGE ON SEQUENCE profiles_id_seq TO anon, authenticated, service_role",
]


class Connection(psycopg2.extensions.connection):
    route = "direct"  # or "pgbouncer": how this connection reaches the server


class Supa:
    """The Supabase-style platform on the test's stack."""

    def __init__(self, stack):
        self.stack = stack
        self._conns: list = []

    def connect(self, route: str, user: str, password: str, dbname: str | None = None):
        """A login over loopback TCP with the role's password (md5), as a client would."""
        ep = self.stack.endpoint_as(route, user, password, dbname)
        conn = psycopg2.connect(host=ep.host, port=ep.port, user=ep.user, password=ep.password,
                                dbname=ep.dbname, connect_timeout=10, connection_factory=Connection)
        conn.route = route
        conn.autocommit = True
        self._conns.append(conn)
        return conn

    def api(self, route: str, dbname: str | None = None):
        """A connection of the API server (PostgREST) as `authenticator`."""
        return self.connect(route, AUTHENTICATOR, AUTHENTICATOR_PASSWORD, dbname)

    def admin(self, query: str, params=None):
        conn = self.connect("direct", ADMIN, ADMIN_PASSWORD)
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description is not None else None
        finally:
            conn.close()

    def close(self):
        for c in self._conns:
            with contextlib.suppress(Exception):
                c.close()


def claims_for(role: str, tenant: int | None = None) -> dict:
    claims = {"role": role, "sub": str(uuid.uuid4()), "aud": "authenticated"}
    if tenant is not None:
        claims["tenant_id"] = tenant
    return claims


def request(conn, role: str | None, claims: dict | None, query: str, params=None, *,
            style: str = "set local role") -> list[tuple] | None:
    """One PostgREST request: one transaction that switches role and claims locally.
    role None: no role switch (the request runs as authenticator itself). style "set_config":
    role and claims in one statement, as PostgREST 10+ sends them."""
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        try:
            if style == "set_config" and role is not None and claims is not None:
                cur.execute("SELECT set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                            [role, json.dumps(claims)])
            else:
                if role is not None:
                    cur.execute(f'SET LOCAL ROLE "{role}"')
                if claims is not None:
                    cur.execute("SELECT set_config('request.jwt.claims', %s, true)", [json.dumps(claims)])
            cur.execute(query, params)
            rows = cur.fetchall() if cur.description is not None else None
            cur.execute("COMMIT")
            return rows
        except BaseException:
            with contextlib.suppress(Exception):
                cur.execute("ROLLBACK")
            raise


def as_tenant(conn, n: int, query: str, params=None):
    return request(conn, tenant_role(n), claims_for(tenant_role(n), n), query, params)


def as_anon(conn, query: str, params=None):
    return request(conn, "anon", claims_for("anon"), query, params)


def as_service(conn, query: str, params=None):
    return request(conn, "service_role", claims_for("service_role"), query, params)


def denied(fn, *args) -> dict:
    with pytest.raises(psycopg2.Error) as e:
        fn(*args)
    err = pg_error(e)
    assert err["sqlstate"] == "42501", err
    return err


def assert_denied_for_key(fn, *args, key: str) -> dict:
    err = denied(fn, *args)
    assert err["message"] == f'permission denied for key "{key}"', err
    return err


@pytest.fixture(scope="module")
def supa(stack):
    for q in PLATFORM_SETUP:
        stack.cluster.sql(q, dbname="app")
    assert stack.cluster.scalar("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [ADMIN]) is False
    s = Supa(stack)
    for q in ADMIN_SETUP:
        s.admin(q)
    stack.add_pgbouncer_user(AUTHENTICATOR, AUTHENTICATOR_PASSWORD)
    stack.add_pgbouncer_database(POOL1, pool_size=1)
    yield s
    s.close()


@pytest.fixture(params=["direct", "pgbouncer"])
def api(request, supa):
    """The API server's connection as authenticator, straight or through pgbouncer."""
    conn = supa.api(request.param)
    yield conn
    conn.close()


INSERT_BARE = "INSERT INTO profiles (tenant_id, user_id) VALUES (%s, %s)"
INSERT = ("INSERT INTO profiles (tenant_id, user_id, email, ssn, note) "
          "VALUES (%s, %s, %s, %s, envelope.encrypt_field(%s, 'tenant_' || %s, NULL)) "
          "RETURNING id, email, ssn, envelope.decrypt_field(note)")


def person(tag: str, n: int) -> dict:
    return {"user_id": str(uuid.uuid4()), "email": f"{tag}.t{n}@tenant{n}.example",
            "ssn": f"{n}{n}{n}-{uuid.uuid4().int % 100:02d}-{n}{n}{n}{n}",
            "note": f"note of {tag} in tenant {n}"}


def insert_as_tenant(conn, n: int, p: dict) -> int:
    rows = as_tenant(conn, n, INSERT, [n, p["user_id"], p["email"], p["ssn"], p["note"], n])
    assert rows is not None and len(rows) == 1
    row_id, email, ssn, note = rows[0]
    assert (email, ssn, note) == (p["email"], p["ssn"], p["note"])  # plaintext back (RETURNING)
    p["id"] = row_id
    return row_id


@pytest.fixture
def two_tenants(api):
    """One row of each tenant, written by the tenant's own role through the API."""
    tag = f"{api.route}-{uuid.uuid4().hex[:8]}"
    people = {n: person(tag, n) for n in TENANTS}
    for n, p in people.items():
        insert_as_tenant(api, n, p)
    return people


SELECT_BOTH = ("SELECT tenant_id, email::text, ssn::text, envelope.is_sealed(email), envelope.is_sealed(ssn) "
               "FROM profiles WHERE user_id IN (%s, %s) ORDER BY tenant_id")


def both(people) -> list:
    return [people[1]["user_id"], people[2]["user_id"]]


@contextlib.contextmanager
def misconfigured(supa, how: str):
    """The admin breaks row-level security, and repairs it afterwards."""
    if how == "policy_using_true":
        supa.admin("DROP POLICY tenant_rows ON profiles")
        supa.admin("CREATE POLICY tenant_rows ON profiles USING (true) WITH CHECK (true)")  # TO PUBLIC
    else:
        supa.admin("ALTER TABLE profiles DISABLE ROW LEVEL SECURITY")
    try:
        yield
    finally:
        if how == "policy_using_true":
            supa.admin("DROP POLICY tenant_rows ON profiles")
            supa.admin(GOOD_POLICY)
        else:
            supa.admin("ALTER TABLE profiles ENABLE ROW LEVEL SECURITY")


def assert_ciphertext(value: str, plaintext: str) -> None:
    assert value.startswith("penv1:"), value
    assert plaintext not in value


# ---- tests ----------------------------------------------------------------------------------

def test_admin_is_no_superuser_and_reads_ciphertext(supa, stack, two_tenants):
    """supa_admin owns the table and administers the tenant keys, without superuser and
    without any right to read the protected values."""
    assert stack.cluster.scalar("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = %s",
                                [ADMIN]) is False
    rows = supa.admin(SELECT_BOTH, both(two_tenants))
    assert [r[0] for r in rows] == [1, 2]  # the owner is not subject to its table's RLS
    for (n, email, ssn, *_), p in zip(rows, (two_tenants[1], two_tenants[2])):
        assert_ciphertext(email, p["email"])
        assert_ciphertext(ssn, p["ssn"])
    supa.admin("SELECT envelope.grant_key('tenant_1', %s, 'decrypt')", [ADMIN])  # `admin` allows it
    try:
        rows = supa.admin("SELECT email::text FROM profiles WHERE id = %s", [two_tenants[1]["id"]])
        assert rows == [(two_tenants[1]["email"],)]  # the grant counts at once
    finally:
        supa.admin("SELECT envelope.revoke_key('tenant_1', %s, 'decrypt')", [ADMIN])
    assert_ciphertext(supa.admin("SELECT email::text FROM profiles WHERE id = %s",
                                 [two_tenants[1]["id"]])[0][0], two_tenants[1]["email"])


def test_tenant_writes_reads_and_searches_only_its_own_rows(supa, stack, api, two_tenants):
    for n, other in ((1, 2), (2, 1)):
        mine, theirs = two_tenants[n], two_tenants[other]
        me = as_tenant(api, n, "SELECT current_user, "
                       "current_setting('request.jwt.claims', true)::jsonb ->> 'tenant_id'")
        assert me == [(tenant_role(n), str(n))]
        # own rows in plaintext, the other tenant's rows invisible (RLS)
        rows = as_tenant(api, n, "SELECT id, tenant_id, email, ssn, envelope.decrypt_field(note) "
                                 "FROM profiles WHERE user_id IN (%s, %s)", both(two_tenants))
        assert rows == [(mine["id"], n, mine["email"], mine["ssn"], mine["note"])]
        assert {r[0] for r in as_tenant(api, n, "SELECT DISTINCT tenant_id FROM profiles")} == {n}
        # equality search on the protected column (blind index)
        assert as_tenant(api, n, "SELECT id, email FROM profiles WHERE email = %s",
                         [mine["email"]]) == [(mine["id"], mine["email"])]
        assert as_tenant(api, n, "SELECT id FROM profiles WHERE email = %s", [theirs["email"]]) == []
        assert as_tenant(api, n, "SELECT envelope.unseal(email) FROM profiles WHERE id = %s",
                         [mine["id"]]) == [(mine["email"],)]
        # RLS refuses a row for the other tenant (no protected value in it: with one, the
        # protection trigger, which runs before the policy's check, refuses it first)
        err = denied(as_tenant, api, n, INSERT_BARE, [other, str(uuid.uuid4())])
        assert err["message"] == 'new row violates row-level security policy for table "profiles"', err
        # UPDATE of its own row re-seals under its own key, and reads back
        new_email = f"updated.{mine['email']}"
        assert as_tenant(api, n, "UPDATE profiles SET email = %s WHERE id = %s RETURNING email",
                         [new_email, mine["id"]]) == [(new_email,)]
        mine["email"] = new_email
    # at rest: ciphertext only (read as the superuser, who holds no key grant)
    stack.assert_sealed("profiles", "email", [p["email"] for p in two_tenants.values()])
    stack.assert_sealed("profiles", "ssn", [p["ssn"] for p in two_tenants.values()])
    notes = stack.raw("SELECT note::text FROM profiles WHERE user_id IN (%s, %s)", both(two_tenants))
    assert all(v.startswith("env1:") for (v,) in notes)
    keys = stack.raw("SELECT tenant_id, (envelope.key_of(note)).key_name FROM profiles "
                     "WHERE user_id IN (%s, %s) ORDER BY 1", both(two_tenants))
    assert keys == [(1, "tenant_1"), (2, "tenant_2")]


@pytest.mark.parametrize("how", ["policy_using_true", "rls_disabled"])
def test_tenant_isolation_holds_with_rls_misconfigured(supa, api, two_tenants, how):
    t1, t2 = two_tenants[1], two_tenants[2]
    with misconfigured(supa, how):
        rows = as_tenant(api, 1, SELECT_BOTH, both(two_tenants))
        assert [r[0] for r in rows] == [1, 2]  # RLS no longer hides tenant 2's row ...
        (_, e1, s1, sealed_e1, sealed_s1), (_, e2, s2, sealed_e2, sealed_s2) = rows
        assert (e1, s1) == (t1["email"], t1["ssn"])  # ... its own row: plaintext
        assert_ciphertext(e2, t2["email"])  # ... the other tenant's: ciphertext only
        assert_ciphertext(s2, t2["ssn"])
        assert sealed_e1 and sealed_s1 and sealed_e2 and sealed_s2
        # what a driver returns for `SELECT *`
        star = as_tenant(api, 1, "SELECT * FROM profiles WHERE id = %s", [t2["id"]])
        assert t2["email"] not in repr(star) and t2["ssn"] not in repr(star)
        # explicit decryption of the other tenant's values: refused by the key privilege
        for col in ("email", "ssn"):
            err = assert_denied_for_key(as_tenant, api, 1, f"SELECT envelope.unseal({col}) FROM profiles "
                                        "WHERE id = %s", [t2["id"]], key="tenant_2")
            assert t2[col] not in str(err)
        assert_denied_for_key(as_tenant, api, 1, "SELECT envelope.decrypt_field(note) FROM profiles "
                              "WHERE id = %s", [t2["id"]], key="tenant_2")
        # and its own, in the same role: allowed (the refusal above is per key)
        assert as_tenant(api, 1, "SELECT envelope.unseal(email), envelope.unseal(ssn), "
                         "envelope.decrypt_field(note) FROM profiles WHERE id = %s",
                         [t1["id"]]) == [(t1["email"], t1["ssn"], t1["note"])]
        # writing under the other tenant's key: refused (42501 on the key, not on RLS)
        assert_denied_for_key(as_tenant, api, 1, INSERT, [2, str(uuid.uuid4()), "planted@example.org",
                                                           "000-00-0000", "planted", 1], key="tenant_2")
        assert_denied_for_key(as_tenant, api, 1, "UPDATE profiles SET email = %s WHERE id = %s",
                              ["hijack@example.org", t2["id"]], key="tenant_2")
        # moving its own row to the other tenant would re-seal under tenant_2: refused
        assert_denied_for_key(as_tenant, api, 1, "UPDATE profiles SET tenant_id = 2 WHERE id = %s",
                              [t1["id"]], key="tenant_2")
    # nothing was changed by the refused writes
    rows = as_service(api, "SELECT tenant_id, email FROM profiles WHERE user_id IN (%s, %s) ORDER BY 1",
                      both(two_tenants))
    assert rows == [(1, t1["email"]), (2, t2["email"])]


def test_email_is_unique_per_tenant_only(supa, api, two_tenants):
    """UNIQUE (tenant_id, email) on the blind index: a tenant may register an address
    another tenant has (no cross-tenant 23505), not twice in its own rows."""
    t1 = two_tenants[1]
    copy = person(f"dup-{uuid.uuid4().hex[:6]}", 2)
    copy["email"] = t1["email"]
    insert_as_tenant(api, 2, copy)
    again = person(f"dup-{uuid.uuid4().hex[:6]}", 1)
    with pytest.raises(psycopg2.Error) as e:
        as_tenant(api, 1, INSERT, [1, again["user_id"], t1["email"], again["ssn"], again["note"], 1])
    assert pg_error(e)["sqlstate"] == "23505"
    assert as_service(api, "SELECT tenant_id FROM profiles WHERE email = %s ORDER BY 1",
                      [t1["email"]]) == [(1,), (2,)]


def test_blind_index_is_an_equality_oracle_without_rls(supa, api, two_tenants):
    """Documented limit (protect.md, "what leaks"): the blind index is one per column and a
    tenant role holds decrypt on its key to search, so without RLS it can tell whether a
    guessed email is stored for another tenant -- it still reads only ciphertext."""
    t2 = two_tenants[2]
    with misconfigured(supa, "rls_disabled"):
        rows = as_tenant(api, 1, "SELECT id, tenant_id, email::text FROM profiles WHERE email = %s",
                         [t2["email"]])
    assert [(r[0], r[1]) for r in rows] == [(t2["id"], 2)]
    assert_ciphertext(rows[0][2], t2["email"])


@pytest.mark.parametrize("how", [None, "policy_using_true", "rls_disabled"])
def test_anon_reads_nothing_or_ciphertext_and_decrypts_nothing(supa, api, two_tenants, how):
    t1, t2 = two_tenants[1], two_tenants[2]
    with (misconfigured(supa, how) if how else contextlib.nullcontext()):
        assert as_anon(api, "SELECT current_user") == [("anon",)]
        rows = as_anon(api, SELECT_BOTH, both(two_tenants))
        if how is None:
            assert rows == []  # no policy for anon: RLS hides every row
            err = denied(as_anon, api, INSERT_BARE, [1, str(uuid.uuid4())])
            assert err["message"] == 'new row violates row-level security policy for table "profiles"', err
            return
        assert [r[0] for r in rows] == [1, 2]
        for (_, email, ssn, sealed_email, sealed_ssn), p in zip(rows, (t1, t2)):
            assert_ciphertext(email, p["email"])
            assert_ciphertext(ssn, p["ssn"])
            assert sealed_email and sealed_ssn
        for n, p in ((1, t1), (2, t2)):
            assert_denied_for_key(as_anon, api, "SELECT envelope.unseal(email) FROM profiles WHERE id = %s",
                                  [p["id"]], key=f"tenant_{n}")
            assert_denied_for_key(as_anon, api, "SELECT envelope.decrypt_field(note) FROM profiles "
                                  "WHERE id = %s", [p["id"]], key=f"tenant_{n}")
            assert_denied_for_key(as_anon, api, INSERT, [n, str(uuid.uuid4()), "anon@example.org", "1",
                                                         "n", n], key=f"tenant_{n}")
        # equality search needs decrypt on the blind key, which anon does not hold
        assert_denied_for_key(as_anon, api, "SELECT id FROM profiles WHERE email = %s", [t1["email"]],
                              key=BLIND_KEY)


def test_service_role_reads_every_tenant_in_plaintext(supa, api, two_tenants):
    t1, t2 = two_tenants[1], two_tenants[2]
    assert as_service(api, "SELECT current_user") == [("service_role",)]
    rows = as_service(api, "SELECT tenant_id, email, ssn, envelope.decrypt_field(note) FROM profiles "
                           "WHERE user_id IN (%s, %s) ORDER BY tenant_id", both(two_tenants))
    assert rows == [(1, t1["email"], t1["ssn"], t1["note"]), (2, t2["email"], t2["ssn"], t2["note"])]
    assert as_service(api, "SELECT id FROM profiles WHERE email = %s", [t2["email"]]) == [(t2["id"],)]
    # decrypt only: it cannot write a tenant's protected column
    assert_denied_for_key(as_service, api, "UPDATE profiles SET email = 'x@example.org' WHERE id = %s",
                          [t1["id"]], key="tenant_1")


def test_authenticator_alone_reads_nothing(supa, api):
    """NOINHERIT: without SET ROLE the API's login role has none of its roles' privileges."""
    assert request(api, None, None, "SELECT current_user") == [(AUTHENTICATOR,)]
    err = denied(request, api, None, None, "SELECT count(*) FROM profiles")
    assert err["message"] == "permission denied for table profiles"
    err = denied(request, api, None, None, "SELECT envelope.unseal(%s::envelope.protected_text)", ["x"])
    assert "permission denied for function unseal" in err["message"]


@pytest.mark.parametrize("style", ["set local role", "set_config"])
@pytest.mark.parametrize("route", ["direct", "pgbouncer"])
def test_role_and_claims_do_not_outlive_their_request(supa, route, style):
    """Successive requests with different roles and claims on ONE server backend (pgbouncer
    with one server connection for the pool, two client connections taking turns; or one
    direct connection) see only their own role's rows and keys, also with RLS off, where only
    the key privileges -- checked for the current user, with the backend's DEK cache warm
    from the previous request -- keep the tenants apart."""
    if route == "pgbouncer":
        a, b = supa.api(route, POOL1), supa.api(route, POOL1)
    else:
        a = b = supa.api(route)
    tag = f"leak-{route}-{uuid.uuid4().hex[:8]}"
    people = {n: person(tag, n) for n in TENANTS}
    insert_as_tenant(a, 1, people[1])
    insert_as_tenant(b, 2, people[2])
    t1, t2 = people[1], people[2]
    who = ("pg_backend_pid(), current_user::text, "
           "nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'tenant_id'")

    pids = set()

    def step(conn, role, claims, query, params=None):
        """One request; then the next transaction on the connection, without role or claims."""
        rows = request(conn, role, claims, f"SELECT {who}, q.* FROM ({query}) q ORDER BY 4", params,
                       style=style)
        tenant = str(claims["tenant_id"]) if claims and "tenant_id" in claims else None
        for r in rows:
            pids.add(r[0])
            assert r[1:3] == (role, tenant), r
        assert_reset(conn)
        return [r[3:] for r in rows]

    def assert_reset(conn):
        after = request(conn, None, None, f"SELECT {who}")
        pids.add(after[0][0])
        # after COMMIT (or ROLLBACK) the role and the claims are gone from the server connection
        assert after[0][1:] == (AUTHENTICATOR, None), after

    def failing(conn, role, claims, query, params, key):
        assert_denied_for_key(lambda: request(conn, role, claims, query, params, style=style), key=key)
        assert_reset(conn)

    by_user = "SELECT tenant_id, email::text FROM profiles WHERE user_id IN (%s, %s)"
    c1, c2 = claims_for(tenant_role(1), 1), claims_for(tenant_role(2), 2)
    assert step(a, tenant_role(1), c1, by_user, both(people)) == [(1, t1["email"])]
    assert step(b, tenant_role(2), c2, by_user, both(people)) == [(2, t2["email"])]
    # claims of tenant 1 under tenant 2's role: RLS shows tenant 1's row, the key hides it
    rows = step(b, tenant_role(2), c1, by_user, both(people))
    assert [r[0] for r in rows] == [1]
    assert_ciphertext(rows[0][1], t1["email"])
    assert step(a, "anon", claims_for("anon"), by_user, both(people)) == []
    # a request that fails (rolled back) leaves nothing behind either
    failing(a, tenant_role(2), c1, "SELECT envelope.unseal(email) FROM profiles WHERE user_id = %s",
            [t1["user_id"]], "tenant_1")
    with misconfigured(supa, "rls_disabled"):
        # equality search: the blind key's decrypt check is remembered per backend -- for its
        # user (with RLS on, anon's search reads no row at all: no check to make)
        by_email = "SELECT tenant_id, email::text FROM profiles WHERE email = %s"
        assert step(a, tenant_role(1), c1, by_email, [t1["email"]]) == [(1, t1["email"])]
        failing(b, "anon", claims_for("anon"), by_email, [t1["email"]], BLIND_KEY)
        assert step(b, tenant_role(2), c2, by_email, [t2["email"]]) == [(2, t2["email"])]
        failing(a, "anon", claims_for("anon"), by_email, [t2["email"]], BLIND_KEY)
        for _ in range(2):  # warm caches in both orders
            rows = step(a, tenant_role(1), c1, by_user, both(people))
            assert rows[0] == (1, t1["email"])
            assert_ciphertext(rows[1][1], t2["email"])
            rows = step(b, tenant_role(2), c2, by_user, both(people))
            assert rows[1] == (2, t2["email"])
            assert_ciphertext(rows[0][1], t1["email"])
            rows = step(a, "anon", claims_for("anon"), by_user, both(people))
            assert_ciphertext(rows[0][1], t1["email"])
            assert_ciphertext(rows[1][1], t2["email"])
            rows = step(b, "service_role", claims_for("service_role"), by_user, both(people))
            assert rows == [(1, t1["email"]), (2, t2["email"])]
    assert len(pids) == 1, f"the requests were served by several backends: {pids}"
    if route == "pgbouncer":
        # that backend is the pool's server connection, logged in by pgbouncer over TCP
        backends = supa.stack.raw("SELECT pid FROM pg_stat_activity WHERE usename = %s AND datname = 'app' "
                                  "AND client_addr IS NOT NULL", [AUTHENTICATOR])
        assert pids <= {p for (p,) in backends}
