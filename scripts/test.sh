#!/usr/bin/env bash
# Sets up (apt packages, build, install) and runs every test of pg_envelope:
#   1. GoogleTest unit tests of the pure C++ code (CMake + CTest), driven by the
#      public vectors in ../shared/testdata (or $PG_ENVELOPE_TESTDATA);
#   2. pg_regress suites against temporary instances (preloaded and not);
#   3. pytest: integration tests that start their own clusters (unix sockets) and
#      KMS emulators (loopback), and the emulators' own protocol tests.
# Exits non-zero if anything fails. .ci/run runs exactly this.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/lib.sh"
"$here/scripts/setup.sh" || exit 1

logs=$(db_tmpdir testlogs)
passed=0
failed=0
stage_status=()

count() {  # count <passed> <failed> <stage> <rc>
  passed=$((passed + $1)); failed=$((failed + $2))
  if [ "$4" -eq 0 ] && [ "$2" -eq 0 ] && [ "$1" -gt 0 ]; then stage_status+=("$3: ok ($1 passed)")
  else stage_status+=("$3: FAILED ($1 passed, $2 failed, exit $4)"); [ "$2" -eq 0 ] && failed=$((failed + 1)); fi
}

echo "== 1/3 unit tests (GoogleTest)"
build=$(mktemp -d /tmp/pg_envelope_build.XXXXXX)
testdata=${PG_ENVELOPE_TESTDATA:-$(cd "$here/.." && pwd)/shared/testdata}
{ cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPG_ENVELOPE_TESTDATA="$testdata" >/dev/null &&
  cmake --build "$build" -j"$(nproc)" >/dev/null &&
  ctest --test-dir "$build" --output-on-failure; } 2>&1 | tee "$logs/unit.log"
rc=${PIPESTATUS[0]}
u_total=$(sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\2/p' "$logs/unit.log" | tail -1)
u_failed=$(sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\1/p' "$logs/unit.log" | tail -1)
count "$(( ${u_total:-0} - ${u_failed:-0} ))" "${u_failed:-0}" unit "$rc"
rm -rf "$build"

echo "== 2/3 pg_regress"
rdir=$(db_tmpdir regress)
as_db_user env REGRESS_WORKDIR="$rdir" "$here/scripts/regress.sh" 2>&1 | tee "$logs/regress.log"
rc=${PIPESTATUS[0]}
r_ok=$(grep -cE '^(ok|test) .*\.\.\. ok' "$logs/regress.log")
r_bad=$(grep -cE '\.\.\. FAILED' "$logs/regress.log")
count "$r_ok" "$r_bad" pg_regress "$rc"
[ "$rc" -eq 0 ] && rm -rf "$rdir"

echo "== 3/3 integration tests (pytest)"
as_db_user env PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 -m pytest -p no:cacheprovider -q \
  "$here/test/integration" "$here/test/kms_emulators/tests" 2>&1 | tee "$logs/pytest.log"
rc=${PIPESTATUS[0]}
p_ok=$(grep -oE '[0-9]+ passed' "$logs/pytest.log" | tail -1 | cut -d' ' -f1)
p_bad=$(grep -oE '[0-9]+ (failed|error)' "$logs/pytest.log" | awk '{s+=$1} END {print s+0}')
count "${p_ok:-0}" "${p_bad:-0}" pytest "$rc"

echo "== summary"
printf '   %s\n' "${stage_status[@]}"
echo "total: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
