#!/usr/bin/env bash
# Sets up (apt packages, build, install) and runs every test of pg_envelope:
#   1. GoogleTest unit tests of the pure C++ code (CMake + CTest), driven by the
#      public vectors in test/vectors (or $PG_ENVELOPE_TESTDATA);
#   2. the same unit tests built with AddressSanitizer + UBSan;
#   3. libFuzzer over the parsers (scripts/fuzz.sh): every test/fuzz/fuzz_*.cpp, its
#      seed corpus replayed, then $PG_ENVELOPE_FUZZ_SECONDS (default 30) s of fuzzing each;
#   4. pg_regress suites (scripts/regress.sh): `make installcheck` against a running
#      server, each suite alone and in reverse order, and without the preload;
#   5. pytest: integration tests that start their own clusters (unix sockets) and
#      KMS emulators (loopback), the emulators' own protocol tests, and the checks of
#      the source tree's structure (no include cycle, one version everywhere).
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

testdata=${PG_ENVELOPE_TESTDATA:-$here/test/vectors}
unit_tests() {  # unit_tests <stage> <log> [cmake options]: build in a temporary directory, run CTest
  local stage=$1 log=$2 build rc u_total u_failed; shift 2
  build=$(mktemp -d /tmp/pg_envelope_build.XXXXXX)
  { cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPG_ENVELOPE_TESTDATA="$testdata" "$@" >/dev/null &&
    cmake --build "$build" -j"$(nproc)" >/dev/null &&
    ctest --test-dir "$build" --output-on-failure; } 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  u_total=$(sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\2/p' "$log" | tail -1)
  u_failed=$(sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\1/p' "$log" | tail -1)
  count "$(( ${u_total:-0} - ${u_failed:-0} ))" "${u_failed:-0}" "$stage" "$rc"
  rm -rf "$build"
}

echo "== 1/5 unit tests (GoogleTest)"
unit_tests unit "$logs/unit.log"

echo "== 2/5 unit tests under ASan+UBSan"
unit_tests unit-asan "$logs/unit-asan.log" -DPG_ENVELOPE_BUILD_EXTENSION=OFF -DPG_ENVELOPE_SANITIZE=ON

fuzz_seconds=${PG_ENVELOPE_FUZZ_SECONDS:-30}
echo "== 3/5 fuzzing ($fuzz_seconds s per target)"
PG_ENVELOPE_FUZZ_LOGS="$logs/fuzz" bash "$here/scripts/fuzz.sh" "$fuzz_seconds" 2>&1 | tee "$logs/fuzz.log"
rc=${PIPESTATUS[0]}
f_line=$(grep -E '^fuzz: [0-9]+ targets' "$logs/fuzz.log" | tail -1)
f_ok=$(sed -n 's/.* \([0-9]*\) ok, .*/\1/p' <<<"$f_line")
f_bad=$(sed -n 's/.* \([0-9]*\) failed, .*/\1/p' <<<"$f_line")
f_execs=$(sed -n 's/.* \([0-9]*\) executions in total.*/\1/p' <<<"$f_line")
count "${f_ok:-0}" "${f_bad:-0}" "fuzzing (${f_execs:-0} executions)" "$rc"

echo "== 4/5 pg_regress"
rdir=$(db_tmpdir regress)
as_db_user env REGRESS_WORKDIR="$rdir" "$here/scripts/regress.sh" 2>&1 | tee "$logs/regress.log"
rc=${PIPESTATUS[0]}
r_ok=$(grep -cE '^(ok|test) .*\.\.\. ok' "$logs/regress.log")
r_bad=$(grep -cE '\.\.\. FAILED' "$logs/regress.log")
count "$r_ok" "$r_bad" pg_regress "$rc"
[ "$rc" -eq 0 ] && rm -rf "$rdir"

echo "== 5/5 integration tests (pytest)"
as_db_user env PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 -m pytest -p no:cacheprovider -q -rs \
  "$here/test/integration" "$here/test/kms_emulators/tests" "$here/test/structure" 2>&1 | tee "$logs/pytest.log"
rc=${PIPESTATUS[0]}
p_ok=$(grep -oE '[0-9]+ passed' "$logs/pytest.log" | tail -1 | cut -d' ' -f1)
p_bad=$(grep -oE '[0-9]+ (failed|error)' "$logs/pytest.log" | awk '{s+=$1} END {print s+0}')
count "${p_ok:-0}" "${p_bad:-0}" pytest "$rc"
p_skip=$(grep -oE '[0-9]+ skipped' "$logs/pytest.log" | tail -1 | cut -d' ' -f1)
if [ "${p_skip:-0}" -gt 0 ]; then  # e.g. the Citus tests without Citus: the reasons are the SKIPPED lines
  stage_status+=("pytest: $p_skip skipped: $(grep -E '^SKIPPED' "$logs/pytest.log" | sed 's/^SKIPPED \[[0-9]*\] //' | cut -d: -f1 | sort -u | tr '\n' ' ')")
fi

echo "== summary"
printf '   %s\n' "${stage_status[@]}"
echo "total: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
