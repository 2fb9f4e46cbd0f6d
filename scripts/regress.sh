#!/usr/bin/env bash
# Runs the pg_regress suites against temporary instances: the main suites with
# pg_envelope preloaded and a master key, and not_preloaded without the preload.
# Must run as a non-root user (initdb refuses root); scripts/test.sh arranges that.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
pg_config=${PG_CONFIG:-pg_config}
bindir=$("$pg_config" --bindir)
pg_regress=$(dirname "$("$pg_config" --pgxs)")/../test/regress/pg_regress
work=${REGRESS_WORKDIR:-$(mktemp -d /tmp/pg_envelope_regress.XXXXXX)}
mkdir -p "$work/results"

(umask 077; openssl rand -hex 32 > "$work/master.key")
cat > "$work/preload.conf" <<CONF
shared_preload_libraries = 'pg_envelope'
envelope.master_key_file = '$work/master.key'
max_parallel_workers_per_gather = 0
CONF
: > "$work/nopreload.conf"
# Credential files for the kms suite (fake: nothing listens where they are sent).
(umask 077
 echo 'hvs.not-a-real-token' > "$work/vault.token"
 printf '[default]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = not-a-real-secret\n' > "$work/aws.credentials")
export PG_ENVELOPE_TEST_VAULT_TOKEN_FILE="$work/vault.token"
export PG_ENVELOPE_TEST_AWS_CREDENTIALS_FILE="$work/aws.credentials"

status=0
run() {
  local name=$1 conf=$2; shift 2
  echo "== pg_regress: $name"
  if ! "$pg_regress" --bindir="$bindir" --inputdir="$here" --outputdir="$work" \
      --temp-instance="$work/tmp_$name" --temp-config="$conf" --port="$((55000 + RANDOM % 5000))" \
      --encoding=UTF8 --no-locale --dbname=contrib_regression "$@"; then
    status=1
    [ -f "$work/regression.diffs" ] && cat "$work/regression.diffs"
  fi
}
run preloaded "$work/preload.conf" types encrypt_decrypt keys privileges encoding kms
run not_preloaded "$work/nopreload.conf" not_preloaded
exit $status
