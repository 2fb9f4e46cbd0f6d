"""Django 3.2 (Debian python3-django, ENGINE django.db.backends.postgresql) over a
protected column.

The application is django_app/: a plain model `Person` with a plain CharField(unique=True)
and its migration. The table is created by `migrate` as `app`, then an operator protects
`email` once (stack.protect). The ORM code then runs unchanged, direct and through
pgbouncer in transaction pooling mode; no Django setting is specific to pg_envelope.
"""
from __future__ import annotations

import io

import psycopg2
import pytest

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402

TABLE = "django_app_person"


def _configure(route) -> None:
    """The application's settings, in-process; the HOST/PORT of `default` follow the route."""
    if not settings.configured:
        settings.configure(
            DATABASES={"default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": route.dbname, "USER": route.user, "PASSWORD": route.password,
                "HOST": route.host, "PORT": str(route.port),
            }},
            INSTALLED_APPS=["django_app"],
            DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
            USE_TZ=True,
        )
        django.setup()
    from django.db import connections
    connections.close_all()
    settings.DATABASES["default"].update(
        HOST=route.host, PORT=str(route.port),
        # pgbouncer in transaction pooling mode needs Django's documented setting (not
        # pg_envelope's): QuerySet.iterator() otherwise DECLAREs a WITH HOLD cursor that
        # a later FETCH does not find once another client took that server connection
        # (InvalidCursorName; test_crud's iterator() check fails without this line).
        DISABLE_SERVER_SIDE_CURSORS=route.pooled,
    )


@pytest.fixture
def Person(stack, route):
    """The app's model on this route; its table freshly made by `migrate`, then protected."""
    _configure(route)
    from django.core.management import call_command
    from django.db import connections
    call_command("migrate", "django_app", "zero", verbosity=0)
    call_command("migrate", "django_app", verbosity=0)
    stack.protect(TABLE, "email")
    from django_app.models import Person
    try:
        yield Person
    finally:
        connections.close_all()


def stored(stack, pk: int) -> str:
    """The stored form of one row's email as the superuser reads it (no grant: ciphertext)."""
    rows = stack.raw(f"SELECT email::text FROM {TABLE} WHERE id = %s", [pk])
    assert len(rows) == 1
    return rows[0][0]


def test_crud(stack, route, Person):
    # create
    ada = Person.objects.create(email="ada@example.org", name="Ada")
    assert isinstance(ada.pk, int)
    bob = Person(email="bob@example.org", name="Bob")
    bob.save()
    # bulk create: one multi-row INSERT ... RETURNING id
    users = Person.objects.bulk_create(
        [Person(email=f"user{i}@example.org", name=f"User {i:02d}") for i in range(10)])
    assert all(isinstance(u.pk, int) for u in users)
    plaintexts = ["ada@example.org", "bob@example.org"] + [f"user{i}@example.org" for i in range(10)]
    stack.assert_sealed(TABLE, "email", plaintexts)

    # get by pk reads plaintext
    got = Person.objects.get(pk=ada.pk)
    assert (got.email, got.name) == ("ada@example.org", "Ada")
    # equality on the protected field
    assert Person.objects.get(email="user7@example.org").name == "User 07"
    assert list(Person.objects.filter(email="bob@example.org").values_list("pk", flat=True)) == [bob.pk]
    assert Person.objects.filter(email="zed@example.org").exists() is False
    assert Person.objects.filter(email="ada@example.org").exists() is True
    assert Person.objects.filter(email="ada@example.org").count() == 1
    assert sorted(Person.objects.filter(email__in=["user1@example.org", "user2@example.org", "zed@example.org"])
                  .values_list("name", flat=True)) == ["User 01", "User 02"]
    assert Person.objects.exclude(email="ada@example.org").count() == 11
    assert Person.objects.exclude(email__in=["ada@example.org", "bob@example.org"]).count() == 10
    # order by other fields
    assert list(Person.objects.order_by("-name").values_list("name", flat=True)[:3]) == [
        "User 09", "User 08", "User 07"]
    assert [p.email for p in Person.objects.order_by("pk")] == plaintexts
    # iterator() in chunks, while another client runs a transaction in between (through
    # pgbouncer it takes the server connection the first chunk came from)
    rows = Person.objects.iterator(chunk_size=5)
    first = next(rows)
    with psycopg2.connect(host=route.host, port=route.port, user=route.user, password=route.password,
                          dbname=route.dbname) as other, other.cursor() as cur:
        cur.execute("SELECT count(*) FROM django_app_person WHERE email = %s", ["user9@example.org"])
        assert cur.fetchone() == (1,)
        assert sorted([first.email] + [p.email for p in rows]) == sorted(plaintexts)
    other.close()

    # update of another field leaves the ciphertext as it is (no re-encryption)
    before = stored(stack, ada.pk)
    ada.name = "Ada Lovelace"
    ada.save(update_fields=["name"])
    assert Person.objects.filter(email="bob@example.org").update(name="Robert") == 1
    assert stored(stack, ada.pk) == before
    assert Person.objects.get(email="bob@example.org").name == "Robert"
    # a plain save() writes every field, email included: the value stays the same plaintext
    ada.name = "Countess"
    ada.save()
    assert Person.objects.get(email="ada@example.org").name == "Countess"
    stack.assert_sealed(TABLE, "email", plaintexts)
    # update of the protected field: a new ciphertext, found by its new value only
    before = stored(stack, ada.pk)
    ada.email = "ada.lovelace@example.org"
    ada.save()
    assert Person.objects.filter(email="user3@example.org").update(email="user3@example.net") == 1
    after = stored(stack, ada.pk)
    assert after != before and after.startswith("penv1:")
    assert Person.objects.get(email="ada.lovelace@example.org").pk == ada.pk
    assert not Person.objects.filter(email__in=["ada@example.org", "user3@example.org"]).exists()
    assert Person.objects.get(email="user3@example.net").name == "User 03"

    # delete: an instance, and a queryset filtered on the protected field
    ada.delete()
    assert Person.objects.filter(email="user5@example.org").delete() == (1, {"django_app.Person": 1})
    assert not Person.objects.filter(pk=ada.pk).exists()
    assert Person.objects.count() == 10
    assert stack.raw(f"SELECT count(*) FROM {TABLE} WHERE id = %s", [ada.pk]) == [(0,)]
    stack.assert_sealed(TABLE, "email", ["ada.lovelace@example.org", "bob@example.org", "user3@example.net"])


def test_upsert(stack, Person):
    ann = Person.objects.create(email="ann@example.org", name="Ann")
    ann_stored = stored(stack, ann.pk)

    # update_or_create: SELECT ... WHERE email = %s FOR UPDATE, then save() or INSERT
    obj, created = Person.objects.update_or_create(email="ann@example.org", defaults={"name": "Ann B."})
    assert (created, obj.pk) == (False, ann.pk)
    obj, created = Person.objects.update_or_create(email="ben@example.org", defaults={"name": "Ben"})
    assert created is True
    ben_pk = obj.pk
    # get_or_create: found by the protected field, or inserted
    obj, created = Person.objects.get_or_create(email="ann@example.org", defaults={"name": "not used"})
    assert (created, obj.pk, obj.name) == (False, ann.pk, "Ann B.")
    obj, created = Person.objects.get_or_create(email="cat@example.org", defaults={"name": "Cat"})
    assert created is True
    cat_pk = obj.pk
    # bulk_create(ignore_conflicts=True): INSERT ... ON CONFLICT DO NOTHING, the blind
    # UNIQUE index finding the conflicts
    Person.objects.bulk_create([Person(email="ann@example.org", name="dup Ann"),
                                Person(email="dan@example.org", name="Dan"),
                                Person(email="cat@example.org", name="dup Cat")], ignore_conflicts=True)

    rows = list(Person.objects.order_by("name").values_list("email", "name"))
    assert rows == [("ann@example.org", "Ann B."), ("ben@example.org", "Ben"), ("cat@example.org", "Cat"),
                    ("dan@example.org", "Dan")]
    assert Person.objects.get(email="ben@example.org").pk == ben_pk
    assert Person.objects.get(email="cat@example.org").pk == cat_pk
    # update_or_create's save() wrote email again with the same plaintext: still sealed,
    # still readable and found (whether or not the stored ciphertext was kept as is)
    assert stored(stack, ann.pk).startswith("penv1:")
    print(f"\nupdate_or_create on an existing row kept the stored ciphertext: {stored(stack, ann.pk) == ann_stored}")
    stack.assert_sealed(TABLE, "email", ["ann@example.org", "ben@example.org", "cat@example.org", "dan@example.org"])


def test_unique_violation_raises_integrity_error(stack, Person):
    from django.db import IntegrityError, transaction
    Person.objects.create(email="dup@example.org", name="First")
    with pytest.raises(IntegrityError) as info:
        with transaction.atomic():
            Person.objects.create(email="dup@example.org", name="Second")
    assert info.value.__cause__.pgcode == "23505"
    # the error's DETAIL (also in the server log) names the blind index value, never the plaintext
    assert "dup@example.org" not in str(info.value)
    other = Person.objects.create(email="other@example.org", name="Other")
    other.email = "dup@example.org"
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            other.save()
    assert sorted(Person.objects.values_list("email", flat=True)) == ["dup@example.org", "other@example.org"]


def test_introspection(stack, Person):
    """What Django's introspection (inspectdb) sees of the protected column."""
    from django.core.management import call_command
    from django.db import connection
    with connection.cursor() as cursor:
        description = {d.name: d for d in connection.introspection.get_table_description(cursor, TABLE)}
        constraints = connection.introspection.get_constraints(cursor, TABLE)
    oid = stack.raw("SELECT atttypid::int FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'email'",
                    [TABLE])[0][0]
    assert description["email"].type_code == oid
    assert description["email"].null_ok is False
    assert any(c["unique"] and c["columns"] == ["email"] for c in constraints.values())
    out = io.StringIO()
    call_command("inspectdb", TABLE, stdout=out)
    email_line = next(line.strip() for line in out.getvalue().splitlines() if line.strip().startswith("email ="))
    name_line = next(line.strip() for line in out.getvalue().splitlines() if line.strip().startswith("name ="))
    print(f"\ninspectdb: {email_line}")
    assert name_line == "name = models.CharField(max_length=100)"
    # a text field with its UNIQUE (Django maps no OID to the extension's type: it
    # guesses TextField and says so; max_length=254 is gone with varchar(254))
    assert email_line.startswith(("email = models.TextField(", "email = models.CharField("))
    assert "unique=True" in email_line

