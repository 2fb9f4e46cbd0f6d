#!/usr/bin/env bash
# Runs the pg_regress suites:
#   1. `make installcheck` (what PGXS users type) against a running server that this
#      script starts with pg_envelope preloaded and a master key;
#   2. the same suites in reverse order, and each suite alone, in temporary instances:
#      every suite creates what it needs and leaves the database as it found it;
#   3. not_preloaded, in an instance without the preload.
# Must run as a non-root user (initdb refuses root); scripts/test.sh arranges that.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
pg_config=${PG_CONFIG:-pg_config}
bindir=$("$pg_config" --bindir)
pg_regress=$(dirname "$("$pg_config" --pgxs)")/../test/regress/pg_regress
work=${REGRESS_WORKDIR:-$(mktemp -d /tmp/pg_envelope_regress.XXXXXX)}
mkdir -p "$work/results"
# The suites `make installcheck` runs, in the Makefile's order.
suites=$(make -s -C "$here" --no-print-directory print-regress PG_CONFIG="$pg_config")

(umask 077; openssl rand -hex 32 > "$work/master.key")
cat > "$work/preload.conf" <<CONF
shared_preload_libraries = 'pg_envelope'
envelope.master_key_file = '$work/master.key'
max_parallel_workers_per_gather = 0
CONF
: > "$work/nopreload.conf"

status=0
run() {  # run <name> <config> <suite>...: pg_regress in a temporary instance
  local name=$1 conf=$2; shift 2
  echo "== pg_regress ($name): $*"
  mkdir -p "$work/$name"
  if ! "$pg_regress" --bindir="$bindir" --inputdir="$here" --outputdir="$work/$name" \
      --temp-instance="$work/tmp_$name" --temp-config="$conf" --port="$((55000 + RANDOM % 5000))" \
      --encoding=UTF8 --no-locale --dbname=contrib_regression "$@"; then
    status=1
    [ -f "$work/$name/regression.diffs" ] && cat "$work/$name/regression.diffs"
  fi
  return 0
}

# 1. make installcheck against a running server.
echo "== make installcheck against a running server"
server="$work/server"
port=$((55000 + RANDOM % 5000))
"$bindir/initdb" -D "$server" --auth=trust --no-locale --encoding=UTF8 -U "$(id -un)" >/dev/null
cat "$work/preload.conf" >> "$server/postgresql.conf"
cat >> "$server/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$work'
CONF
"$bindir/pg_ctl" -D "$server" -l "$work/server.log" -w start >/dev/null
mkdir -p "$work/installcheck"
if ! PGHOST="$work" PGPORT=$port make -s -C "$here" --no-print-directory installcheck PG_CONFIG="$pg_config" \
    REGRESS_OPTS="--outputdir=$work/installcheck --encoding=UTF8 --no-locale"; then
  status=1
  [ -f "$work/installcheck/regression.diffs" ] && cat "$work/installcheck/regression.diffs"
fi
"$bindir/pg_ctl" -D "$server" -w stop >/dev/null

# 2. Reverse order, then each suite alone.
# shellcheck disable=SC2086
run reverse "$work/preload.conf" $(echo $suites | tr ' ' '\n' | tac)
for s in $suites; do run "alone_$s" "$work/preload.conf" "$s"; done

# 3. Without the preload.
run not_preloaded "$work/nopreload.conf" not_preloaded
exit $status
