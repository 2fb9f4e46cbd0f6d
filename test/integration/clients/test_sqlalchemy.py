"""SQLAlchemy 1.4 (Debian python3-sqlalchemy, driver psycopg2) over a protected column.

The application is a plain declarative model with a plain String column; the table is
created by the ORM (metadata.create_all) as `app`, then an operator protects `email`
once (stack.protect). The ORM code then runs unchanged, direct and through pgbouncer in
transaction pooling mode; no SQLAlchemy configuration is specific to pg_envelope.
"""
from __future__ import annotations

import warnings

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, declarative_base

Base = declarative_base()


class Person(Base):
    """The application's model: nothing in it knows about pg_envelope."""
    __tablename__ = "person_sa"
    id = sa.Column(sa.Integer, primary_key=True)
    email = sa.Column(sa.String(254), unique=True, nullable=False)
    name = sa.Column(sa.String(100), nullable=False)


TABLE = Person.__tablename__


def stored(stack, pk: int) -> str:
    """The stored form of one row's email as the superuser reads it (no grant: ciphertext)."""
    rows = stack.raw(f"SELECT email::text FROM {TABLE} WHERE id = %s", [pk])
    assert len(rows) == 1
    return rows[0][0]


@pytest.fixture
def engine(stack, route):
    """The app's engine on this route; a fresh table made by the ORM, then protected."""
    # Nothing pooled-mode specific is needed: psycopg2 sends no server-side prepared
    # statements and SQLAlchemy keeps no session state across transactions.
    eng = sa.create_engine(
        f"postgresql+psycopg2://{route.user}:{route.password}@{route.host}:{route.port}/{route.dbname}",
        future=True)
    Base.metadata.drop_all(eng)
    Base.metadata.create_all(eng)
    stack.protect(TABLE, "email")
    try:
        yield eng
    finally:
        eng.dispose()


def test_crud(stack, engine):
    with Session(engine) as s:
        # create
        ada = Person(email="ada@example.org", name="Ada")
        s.add(ada)
        s.commit()
        ada_id = ada.id
        assert isinstance(ada_id, int)
        # bulk create: the unit of work batches the INSERTs (executemany), and a Core
        # executemany INSERT through the ORM session
        s.add_all([Person(email=f"user{i}@example.org", name=f"User {i:02d}") for i in range(10)])
        s.commit()
        s.execute(sa.insert(Person), [{"email": "zed@example.org", "name": "Zed"},
                                      {"email": "bob@example.org", "name": "Bob"}])
        s.commit()

    plaintexts = (["ada@example.org", "zed@example.org", "bob@example.org"]
                  + [f"user{i}@example.org" for i in range(10)])
    stack.assert_sealed(TABLE, "email", plaintexts)

    with Session(engine) as s:
        # get by pk reads plaintext
        ada = s.get(Person, ada_id)
        assert (ada.email, ada.name) == ("ada@example.org", "Ada")
        # filter by equality on the protected column
        found = s.execute(sa.select(Person).where(Person.email == "user7@example.org")).scalars().all()
        assert [(p.email, p.name) for p in found] == [("user7@example.org", "User 07")]
        assert s.execute(sa.select(Person.id).where(Person.email == "nobody@example.org")).all() == []
        assert s.query(Person).filter_by(email="bob@example.org").one().name == "Bob"
        assert s.query(sa.exists().where(Person.email == "zed@example.org")).scalar() is True
        assert s.query(sa.exists().where(Person.email == "nobody@example.org")).scalar() is False
        assert s.execute(sa.select(sa.func.count()).select_from(Person)
                         .where(Person.email == "ada@example.org")).scalar_one() == 1
        assert s.query(Person).filter(Person.email == "user3@example.org").count() == 1
        got = s.execute(sa.select(Person.name).where(
            Person.email.in_(["user1@example.org", "user2@example.org", "nobody@example.org"]))
            .order_by(Person.name)).scalars().all()
        assert got == ["User 01", "User 02"]
        assert s.query(Person).filter(Person.email != "ada@example.org").count() == 12
        # order by other columns
        names = s.execute(sa.select(Person.name).order_by(Person.name.desc()).limit(3)).scalars().all()
        assert names == ["Zed", "User 09", "User 08"]
        by_id = s.execute(sa.select(Person.email).order_by(Person.id)).scalars().all()
        assert by_id[0] == "ada@example.org" and sorted(by_id) == sorted(plaintexts)

    # update of another column leaves the ciphertext as it is (no re-encryption)
    before = stored(stack, ada_id)
    with Session(engine) as s:
        ada = s.get(Person, ada_id)
        ada.name = "Ada Lovelace"
        s.commit()
    assert stored(stack, ada_id) == before
    # update of the protected column: a new ciphertext, found by its new value only
    with Session(engine) as s:
        ada = s.get(Person, ada_id)
        ada.email = "ada.lovelace@example.org"
        s.commit()
    after = stored(stack, ada_id)
    assert after != before and after.startswith("penv1:")
    with Session(engine) as s:
        assert s.query(Person).filter_by(email="ada.lovelace@example.org").one().id == ada_id
        assert s.query(Person).filter_by(email="ada@example.org").count() == 0
        # bulk UPDATE ... WHERE email = ... (ORM-enabled, evaluates in the session too)
        s.execute(sa.update(Person).where(Person.email == "bob@example.org").values(name="Robert"))
        s.commit()
        assert s.query(Person).filter_by(email="bob@example.org").one().name == "Robert"

    # delete: unit of work by pk, and a bulk DELETE ... WHERE email = ...
    with Session(engine) as s:
        s.delete(s.get(Person, ada_id))
        s.execute(sa.delete(Person).where(Person.email == "zed@example.org"))
        s.commit()
        assert s.get(Person, ada_id) is None
        assert s.query(Person).filter_by(email="zed@example.org").count() == 0
        assert s.query(Person).count() == 11
    assert stack.raw(f"SELECT count(*) FROM {TABLE} WHERE id = %s", [ada_id]) == [(0,)]
    stack.assert_sealed(TABLE, "email", ["ada.lovelace@example.org", "bob@example.org", "user0@example.org"])


def test_upsert(stack, engine):
    with Session(engine) as s:
        s.add_all([Person(email="ann@example.org", name="Ann"), Person(email="ben@example.org", name="Ben")])
        s.commit()
        ann_id = s.execute(sa.select(Person.id).where(Person.email == "ann@example.org")).scalar_one()
        ben_id = s.execute(sa.select(Person.id).where(Person.email == "ben@example.org")).scalar_one()
    ann_stored = stored(stack, ann_id)

    with Session(engine) as s:
        # ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name: the conflict is found
        # through the blind UNIQUE index; the stored email is kept as it is.
        stmt = pg_insert(Person).values(email="ann@example.org", name="Ann B.")
        stmt = stmt.on_conflict_do_update(index_elements=["email"], set_=dict(name=stmt.excluded.name))
        s.execute(stmt)
        # the same statement inserting a new row, with RETURNING
        stmt = pg_insert(Person).values(email="cat@example.org", name="Cat")
        stmt = stmt.on_conflict_do_update(index_elements=["email"], set_=dict(name=stmt.excluded.name))
        cat_id, cat_email = s.execute(stmt.returning(Person.id, Person.email)).one()
        assert cat_email == "cat@example.org"
        # ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email: the new value is sealed
        # for this row (not the discarded one) and stays readable and searchable.
        stmt = pg_insert(Person).values(id=ben_id, email="benjamin@example.org", name="ignored")
        stmt = stmt.on_conflict_do_update(index_elements=["id"], set_=dict(email=stmt.excluded.email))
        s.execute(stmt)
        # ON CONFLICT (email) DO NOTHING
        stmt = pg_insert(Person).values(email="cat@example.org", name="Other Cat").on_conflict_do_nothing(
            index_elements=["email"])
        assert s.execute(stmt).rowcount == 0
        s.commit()

    assert stored(stack, ann_id) == ann_stored
    with Session(engine) as s:
        rows = s.execute(sa.select(Person.id, Person.email, Person.name).order_by(Person.id)).all()
        assert [tuple(r) for r in rows] == [(ann_id, "ann@example.org", "Ann B."),
                                            (ben_id, "benjamin@example.org", "Ben"),
                                            (cat_id, "cat@example.org", "Cat")]
        assert s.query(Person).filter_by(email="benjamin@example.org").one().id == ben_id
        assert s.query(Person).filter_by(email="ben@example.org").count() == 0
    stack.assert_sealed(TABLE, "email", ["ann@example.org", "benjamin@example.org", "cat@example.org"])


def test_unique_violation_raises_integrity_error(stack, engine):
    with Session(engine) as s:
        s.add(Person(email="dup@example.org", name="First"))
        s.commit()
        s.add(Person(email="dup@example.org", name="Second"))
        with pytest.raises(sa_exc.IntegrityError) as info:
            s.commit()
        s.rollback()
        assert info.value.orig.pgcode == "23505"
        # the error's DETAIL (also in the server log) names the blind index value, never the plaintext
        assert "Key (email)=(blind:" in str(info.value.orig)
        assert "dup@example.org" not in str(info.value.orig)
        # an UPDATE onto a taken value is refused too
        s.add(Person(email="other@example.org", name="Other"))
        s.commit()
        with pytest.raises(sa_exc.IntegrityError):
            s.execute(sa.update(Person).where(Person.email == "other@example.org").values(email="dup@example.org"))
        s.rollback()
        assert [n for (n,) in s.execute(sa.select(Person.name).order_by(Person.name))] == ["First", "Other"]


def test_string_length_stays_enforced(stack, engine):
    """String(254) is varchar(254): the protected column keeps the limit (22001), and a
    value of exactly 254 characters (multibyte ones included) is accepted and sealed."""
    with Session(engine) as s:
        s.add(Person(email="x" * 255, name="Too long"))
        with pytest.raises(sa_exc.DataError) as info:
            s.commit()
        s.rollback()
        assert info.value.orig.pgcode == "22001"
        fits = "é" * 254
        s.add(Person(email=fits, name="Fits"))
        s.commit()
        assert s.execute(sa.select(Person.name).where(Person.email == fits)).scalar_one() == "Fits"
    stack.assert_sealed("person_sa", "email", [fits])


def test_reflection(stack, engine):
    """Reflection (MetaData.reflect, inspect().get_columns: what automap and Alembic
    autogenerate use) sees the column with the extension's type envelope.protected_text,
    which SQLAlchemy does not know: it warns and reflects it as NullType. A reflected
    table still works, as NullType binds and returns plain strings. One line of
    application configuration (docs/orm.md) makes it reflect as TEXT."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meta = sa.MetaData()
        meta.reflect(engine, only=[TABLE])
        columns = {c["name"]: c for c in sa.inspect(engine).get_columns(TABLE)}
    people = meta.tables[TABLE]
    assert isinstance(people.c.name.type, sa.String) and people.c.name.type.length == 100
    assert columns["email"]["nullable"] is False and people.c.email.nullable is False
    email_type = people.c.email.type
    warned = [str(w.message) for w in caught if "'email'" in str(w.message)]
    print(f"\nreflected email type: {email_type!r}; warnings: {warned}")
    if isinstance(email_type, sa.types.NullType):
        assert warned and all("envelope.protected_text" in m for m in warned)
    # the UNIQUE constraint on the column is reflected under its name
    assert [u["column_names"] for u in sa.inspect(engine).get_unique_constraints(TABLE)] == [["email"]]

    # the reflected table drives inserts, equality search and reads of plaintext
    with engine.begin() as conn:
        conn.execute(people.insert(), [{"email": "r1@example.org", "name": "R1"},
                                       {"email": "r2@example.org", "name": "R2"}])
        row = conn.execute(sa.select(people).where(people.c.email == "r2@example.org")).one()
        assert (row.email, row.name) == ("r2@example.org", "R2")
    stack.assert_sealed(TABLE, "email", ["r1@example.org", "r2@example.org"])

    # the application's one line: name the type for SQLAlchemy's PostgreSQL dialect
    from sqlalchemy.dialects.postgresql.base import ischema_names
    ischema_names["envelope.protected_text"] = sa.TEXT
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "Did not recognize type" left
            meta = sa.MetaData()
            meta.reflect(engine, only=[TABLE])
            col = sa.inspect(engine).get_columns(TABLE)
    finally:
        del ischema_names["envelope.protected_text"]
    assert isinstance(meta.tables[TABLE].c.email.type, sa.TEXT)
    assert isinstance({c["name"]: c for c in col}["email"]["type"], sa.TEXT)
