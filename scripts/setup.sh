#!/usr/bin/env bash
# Installs what pg_envelope needs on Debian 12 (apt), builds it and installs it into
# the system PostgreSQL 15. Safe to run repeatedly. Used by scripts/demo.sh and
# scripts/test.sh; run as root or as a user with sudo.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

packages=(
  g++ make cmake pkg-config openssl clang-14 libclang-rt-14-dev
  postgresql-15 postgresql-server-dev-15
  libssl-dev libcurl4-openssl-dev nlohmann-json3-dev libgtest-dev
  python3 python3-pytest python3-psycopg2 python3-botocore python3-cryptography curl
  # the clients and ORMs the protected-column tests drive (test/integration/clients)
  pgbouncer python3-psycopg python3-sqlalchemy python3-django ruby ruby-activerecord ruby-pg
)
# Node.js and npm: the machine's own if it has them (a NodeSource nodejs carries npm),
# else Debian's.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then packages+=(nodejs npm); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# node-postgres and Sequelize from the npm registry, pinned by the committed lock file.
if [ ! -d "$here/test/integration/clients/node/node_modules" ] ||
   [ "$here/test/integration/clients/node/package-lock.json" -nt "$here/test/integration/clients/node/node_modules" ]; then
  echo "== installing the npm packages of the client tests"
  npm ci --prefix "$here/test/integration/clients/node" --no-audit --no-fund --loglevel=error >/dev/null
fi

export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
echo "== building pg_envelope against $("$PG_CONFIG" --version)"
werror=""
if [ "${CI:-}" = "true" ]; then werror="-Werror"; fi  # CI: the build is warning-free or fails
make -C "$here" -s -j"$(nproc)" PG_CONFIG="$PG_CONFIG" PG_ENVELOPE_WERROR="$werror"
as_root make -C "$here" -s install PG_CONFIG="$PG_CONFIG" >/dev/null
echo "== installed into $("$PG_CONFIG" --pkglibdir)"

# Citus for the scale-out tests (test/integration/test_citus.py): built from its source
# tarball (../shared/citus/ or $PG_ENVELOPE_CITUS_TARBALL) and cached; without the tarball
# it says so and those tests are skipped. PG_ENVELOPE_CITUS=0 leaves Citus alone.
if [ "${PG_ENVELOPE_CITUS:-1}" != "0" ]; then
  PG_CONFIG="$PG_CONFIG" "$here/scripts/citus.sh"
fi
