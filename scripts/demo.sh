#!/usr/bin/env bash
# The main job, end to end on a fresh Debian 12 machine: install, build, start a
# throwaway PostgreSQL cluster with pg_envelope and a local master key, encrypt a
# column, show the ciphertext at rest and the plaintext to an authorised role only.
# Everything is removed afterwards.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/lib.sh"
"$here/scripts/setup.sh"

bindir=/usr/lib/postgresql/15/bin
work=$(db_tmpdir demo)
cleanup() {
  as_db_user "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

as_db_user bash -euo pipefail -c '
work=$1; bindir=$2
# The master key: 256 random bits, readable only by the server user. It is the root
# of trust; in production keep it outside the data directory and back it up apart
# from database backups (see docs/local-kms.md).
(umask 077; openssl rand -hex 32 > "$work/master.key")
"$bindir/initdb" -D "$work/data" -A trust -E UTF8 --no-locale >/dev/null
cat >> "$work/data/postgresql.conf" <<CONF
shared_preload_libraries = '"'"'pg_envelope'"'"'
envelope.master_key_file = '"'"'$work/master.key'"'"'
listen_addresses = '"'"''"'"'
unix_socket_directories = '"'"'$work'"'"'
port = 5499
envelope.audit = '"'"'table'"'"'
CONF
"$bindir/pg_ctl" -D "$work/data" -l "$work/server.log" -w start >/dev/null
' _ "$work" "$bindir"

echo "== demo: a throwaway cluster in $work"
as_db_user "$bindir/psql" -X -q -h "$work" -p 5499 -d postgres -v ON_ERROR_STOP=1 --echo-queries -P pager=off <<'SQL'
CREATE EXTENSION pg_envelope;
SELECT envelope.create_key('tenant_42');
CREATE TABLE patients (id bigint PRIMARY KEY, ssn envelope.encrypted_text);
INSERT INTO patients VALUES (1, envelope.encrypt_field('123-45-6789', 'tenant_42')),
                            (2, envelope.encrypt_field('987-65-4321', 'tenant_42'));
-- At rest: ciphertext only.
SELECT id, ssn FROM patients;
-- An authorised role decrypts.
CREATE ROLE clinician LOGIN;
GRANT SELECT ON patients TO clinician;
GRANT EXECUTE ON FUNCTION envelope.decrypt_field(envelope.encrypted_text, text) TO clinician;
SELECT envelope.grant_key('tenant_42', 'clinician', 'decrypt');
SET ROLE clinician;
SELECT id, envelope.decrypt_field(ssn) AS ssn FROM patients;
RESET ROLE;
-- A role that may read the table but was not granted decryption sees ciphertext only.
CREATE ROLE analyst LOGIN;
GRANT SELECT ON patients TO analyst;
SET ROLE analyst;
SELECT id, left(ssn::text, 40) || '...' AS ssn_as_stored FROM patients;
\set ON_ERROR_STOP 0
SELECT envelope.decrypt_field(ssn) FROM patients;
\set ON_ERROR_STOP 1
RESET ROLE;
-- The key hierarchy: one named key, its DEK stored only wrapped by the master key.
SELECT key_name, kms, version, version_state, is_current FROM envelope.keys;
-- Protected columns: the application's own table, column and SQL, unchanged.
CREATE TABLE users (id bigserial PRIMARY KEY, email text UNIQUE, name text);
SELECT envelope.protect_column('users', 'email', 'tenant_42', context_column => 'id');
CREATE ROLE app LOGIN;
GRANT SELECT, INSERT, UPDATE, DELETE ON users TO app;
GRANT USAGE ON SEQUENCE users_id_seq TO app;
SELECT envelope.grant_key('tenant_42', 'app', 'encrypt'), envelope.grant_key('tenant_42', 'app', 'decrypt');
SET ROLE app;
INSERT INTO users (email, name) VALUES ('ann@example.org', 'Ann'), ('bob@example.org', 'Bob');
INSERT INTO users (email, name) VALUES ('ann@example.org', 'Ann B')
  ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name;
SELECT id, email, name FROM users WHERE email = 'ann@example.org';   -- through the blind index
RESET ROLE;
-- Everyone else, the superuser included (so pg_dump carries ciphertext), sees the sealed form.
SELECT id, left(email::text, 40) || '...' AS email_as_stored, name FROM users;
-- Classification: which sensitive columns are labelled, and are they encrypted at rest?
SELECT envelope.classify('patients', 'ssn', 'phi'), envelope.classify('users', 'email', 'pii');
SELECT tbl, col, label, status FROM envelope.classified_columns ORDER BY 1, 2;
-- Who decrypted what (envelope.audit = 'table'): one row per statement and key, hash-chained.
SELECT pg_sleep(1.5);   -- the audit writer inserts in its own transactions
SELECT seq, event, key_name, object, value_count, current_user_name AS role, detail
  FROM envelope.audit_log ORDER BY seq;
SELECT ok, rows_checked FROM envelope.audit_verify();
SQL
echo "== the data files hold no plaintext:"
as_db_user "$bindir/psql" -X -q -h "$work" -p 5499 -d postgres -c CHECKPOINT
if grep -rqa -e '123-45-6789' -e 'ann@example.org' "$work/data/base"; then
  echo "plaintext found on disk"; exit 1
else
  echo "   grep -r -e '123-45-6789' -e 'ann@example.org' \$PGDATA/base: no match"
fi
echo "== demo finished; the cluster is removed."
