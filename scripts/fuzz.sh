#!/usr/bin/env bash
# Builds every libFuzzer harness test/fuzz/fuzz_<name>.cpp with clang++
# (-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all, through CMake's
# PG_ENVELOPE_FUZZ) in a temporary directory, and runs each for SECONDS against a copy
# of its seed corpus test/fuzz/corpus/<name>/: the seeds are replayed first, then
# mutated. The repository is only read.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET]    # default $PG_ENVELOPE_FUZZ_SECONDS, else 30;
#                                                # 0 replays the seed corpora only
#
# Prints per target the executions and the result, then the total, and exits non-zero
# if the build failed or any target crashed, leaked, timed out or broke an invariant;
# the input that did it is saved in the log directory and its path printed.
# Environment: PG_ENVELOPE_FUZZ_LOGS (log directory; default a new one under
# ${TMPDIR:-/tmp}, kept only when something failed), PG_ENVELOPE_FUZZ_CXX (default
# clang++-14, else clang++). Needs the Debian packages clang-14 and libclang-rt-14-dev
# (scripts/setup.sh installs them). Runs as any user.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

secs=${1:-${PG_ENVELOPE_FUZZ_SECONDS:-30}}
if ! [[ "$secs" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 [SECONDS_PER_TARGET]   (a whole number, 0 = replay the seed corpora only)" >&2
  exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pg_envelope_fuzz.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
if [ -n "${PG_ENVELOPE_FUZZ_LOGS:-}" ]; then
  logs=$PG_ENVELOPE_FUZZ_LOGS; keep_logs=1
  mkdir -p "$logs" || exit 1
else
  logs=$(mktemp -d "${TMPDIR:-/tmp}/pg_envelope_fuzzlogs.XXXXXX") || exit 1; keep_logs=0
fi

fail() {  # fail <why>: a failure before any target ran (the summary line counts it once)
  echo "fuzz: FAILED: $*" >&2
  echo "fuzz: 0 targets, 0 ok, 1 failed, 0 executions in total"
  if [ "$keep_logs" -eq 1 ]; then echo "fuzz logs: $logs"; else rm -rf "$logs"; fi
  exit 1
}

# --- The compiler: clang with libFuzzer and the sanitizer runtimes --------------------
cxx=${PG_ENVELOPE_FUZZ_CXX:-}
if [ -z "$cxx" ]; then
  for c in clang++-14 clang++; do
    if command -v "$c" >/dev/null; then cxx=$(command -v "$c"); break; fi
  done
fi
[ -n "$cxx" ] || fail "no clang++ found (install the Debian packages clang-14 and libclang-rt-14-dev; scripts/setup.sh does)"
printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' >"$tmp/probe.cpp"
if ! "$cxx" -fsanitize=fuzzer,address,undefined "$tmp/probe.cpp" -o "$tmp/probe" >"$logs/probe.log" 2>&1; then
  cat "$logs/probe.log" >&2
  fail "$cxx cannot build a libFuzzer target with -fsanitize=fuzzer,address,undefined (not clang, or the Debian package libclang-rt-14-dev is missing)"
fi

# Readable stack traces: llvm-symbolizer when installed, else binutils' addr2line.
for s in llvm-symbolizer-14 llvm-symbolizer /usr/lib/llvm-14/bin/llvm-symbolizer; do
  if command -v "$s" >/dev/null; then export ASAN_SYMBOLIZER_PATH=$(command -v "$s"); break; fi
done
export ASAN_OPTIONS=${ASAN_OPTIONS:-allow_addr2line=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:allow_addr2line=1}

# --- Build ----------------------------------------------------------------------------
shopt -s nullglob
sources=("$here"/test/fuzz/fuzz_*.cpp)
[ ${#sources[@]} -gt 0 ] || fail "no harnesses in $here/test/fuzz (fuzz_*.cpp)"
echo "== building ${#sources[@]} fuzz targets with $("$cxx" --version | head -1)"
if ! { cmake -S "$here" -B "$tmp/build" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
         -DPG_ENVELOPE_FUZZ=ON -DPG_ENVELOPE_BUILD_EXTENSION=OFF -DPG_ENVELOPE_BUILD_TESTS=OFF &&
       cmake --build "$tmp/build" -j"$(nproc)"; } >"$logs/build.log" 2>&1; then
  tail -40 "$logs/build.log" >&2
  keep_logs=1
  fail "the fuzz targets did not build (log: $logs/build.log)"
fi

# --- Run --------------------------------------------------------------------------------
if [ "$secs" -eq 0 ]; then echo "== replaying the seed corpora"; mode=(-runs=0)
else echo "== fuzzing, $secs s per target"; mode=(-max_total_time="$secs"); fi
ok=0; bad=0; total=0
for src in "${sources[@]}"; do
  name=$(basename "$src" .cpp)  # fuzz_<short>
  short=${name#fuzz_}
  bin="$tmp/build/$name"
  log="$logs/$name.log"
  corpus="$tmp/corpus/$short"
  mkdir -p "$corpus"
  seeds=0
  if [ -d "$here/test/fuzz/corpus/$short" ]; then
    cp -R "$here/test/fuzz/corpus/$short/." "$corpus/"
    seeds=$(find "$here/test/fuzz/corpus/$short" -type f | wc -l)
  fi
  args=("${mode[@]}" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$logs/$name-")
  [ -f "$here/test/fuzz/$name.dict" ] && args+=(-dict="$here/test/fuzz/$name.dict")
  if [ ! -x "$bin" ]; then
    rc=1; echo "no executable $bin" >"$log"
  else
    # libFuzzer enforces the time; the outer limit only catches a fuzzer that hangs itself.
    (cd "$tmp" && exec timeout -k 10 $((secs + 300)) "$bin" "${args[@]}" "$corpus") >"$log" 2>&1
    rc=$?
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
  [ -n "$execs" ] || execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  execs=${execs:-0}
  total=$((total + execs))
  if [ "$rc" -eq 0 ]; then
    ok=$((ok + 1))
    echo "   $name: $execs executions ($seeds seeds): ok"
  else
    bad=$((bad + 1)); keep_logs=1
    why=$(grep -m1 -oE 'pg_envelope fuzz invariant failed at .*' "$log")
    [ -n "$why" ] || why=$(grep -m1 -E '^SUMMARY: ' "$log" | cut -c10-160)
    [ -n "$why" ] || { [ "$rc" -eq 124 ] && why="hung: killed after $((secs + 300)) s"; }
    [ -n "$why" ] || why="exit $rc"
    input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    echo "   $name: $execs executions ($seeds seeds): FAILED ($why)"
    [ -n "$input" ] && echo "      failing input: $input  (reproduce: build with -DPG_ENVELOPE_FUZZ=ON, run ./$name on it)"
    echo "      log: $log"
  fi
done

echo "fuzz: ${#sources[@]} targets, $ok ok, $bad failed, $total executions in total"
if [ "$keep_logs" -eq 0 ]; then rm -rf "$logs"; else echo "fuzz logs: $logs"; fi
[ "$bad" -eq 0 ]
