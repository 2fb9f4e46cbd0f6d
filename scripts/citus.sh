#!/usr/bin/env bash
# Builds Citus from its source tarball and installs it into the system PostgreSQL 15, for
# the scale-out tests (test/integration/test_citus.py). Citus is not part of pg_envelope:
# without the tarball this prints why and exits 0, and those tests are skipped.
#
#   tarball: $PG_ENVELOPE_CITUS_TARBALL, else <repo>/../shared/citus/citus-13.2.2.tar.gz
#   patch:   $PG_ENVELOPE_CITUS_PATCH, else pg15.20-compat.patch next to the tarball; applied
#            only when the server headers already declare have_createdb_privilege() (15.20+)
#   cache:   $PG_ENVELOPE_CACHE_DIR, else /var/cache/pg_envelope (root) or
#            ${XDG_CACHE_HOME:-~/.cache}/pg_envelope: the installed files of a build, keyed by
#            the sha256 of tarball + patch + PostgreSQL version, so that a second run (or a CI
#            machine that keeps the cache) copies them instead of building again.
#
# Idempotent: when the installed files already match the cached build (or the installed
# citus.so is the tarball's version), there is nothing to do. Built without libcurl, so the
# servers never try to send Citus' anonymous statistics anywhere, and without LLVM bitcode
# (JIT inlining is not needed by the tests; it would double the build time).
# Run as root or as a user with sudo (apt-get, make install).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
tarball=${PG_ENVELOPE_CITUS_TARBALL:-$here/../shared/citus/citus-13.2.2.tar.gz}
if [ ! -f "$tarball" ]; then
  echo "== Citus: no source tarball at $tarball (set PG_ENVELOPE_CITUS_TARBALL): not installed," \
       "the Citus tests will be skipped"
  exit 0
fi
tarball=$(cd "$(dirname "$tarball")" && pwd)/$(basename "$tarball")
patch_file=${PG_ENVELOPE_CITUS_PATCH:-$(dirname "$tarball")/pg15.20-compat.patch}
[ -f "$patch_file" ] || patch_file=""

pkglibdir=$("$PG_CONFIG" --pkglibdir)
pg_version=$("$PG_CONFIG" --version)
# the version is the tarball's top directory: citus-<version>/
srcdir_name=$(tar tzf "$tarball" | sed -n 1p | cut -d/ -f1)
version=${srcdir_name#citus-}

if [ "$(id -u)" -eq 0 ]; then cache_root=${PG_ENVELOPE_CACHE_DIR:-/var/cache/pg_envelope}
else cache_root=${PG_ENVELOPE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pg_envelope}; fi
key=$( { sha256sum "$tarball" | cut -d' ' -f1
         if [ -n "$patch_file" ]; then sha256sum "$patch_file" | cut -d' ' -f1; fi
         echo "$pg_version"; } | sha256sum | cut -c1-16)
cache=$cache_root/citus/$version-$key   # $cache/root: the files `make install` writes

# Every file of the cached build is installed, byte for byte.
installed_from_cache() {
  [ -f "$cache/complete" ] || return 1
  local f
  while IFS= read -r -d '' f; do
    cmp -s "$cache/root/$f" "/$f" || return 1
  done < <(cd "$cache/root" && find . -type f -print0)
}

install_from_cache() {
  # existing directories (/usr/lib/...) keep their owner and mode
  tar -C "$cache/root" -cf - . | as_root tar -C / -xf - --no-overwrite-dir --no-same-owner
  if ldd "$pkglibdir/citus.so" | grep -q 'not found'; then
    echo "== Citus: citus.so misses shared libraries:" >&2
    ldd "$pkglibdir/citus.so" | grep 'not found' >&2
    exit 1
  fi
}

if installed_from_cache; then
  echo "== Citus $version already installed in $pkglibdir (cached build $cache)"
  exit 0
fi
if [ -f "$cache/complete" ]; then
  install_from_cache
  echo "== Citus $version installed into $pkglibdir from the cached build $cache"
  exit 0
fi
if [ -f "$pkglibdir/citus.so" ] && grep -aq "Citus $version " "$pkglibdir/citus.so"; then
  echo "== Citus $version already installed in $pkglibdir (not built by this script; no cache)"
  exit 0
fi

# ---- build ------------------------------------------------------------------------------
build_deps=(gcc make patch postgresql-server-dev-15 liblz4-dev libzstd-dev libkrb5-dev)
missing=()
for p in "${build_deps[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== Citus: installing build dependencies: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

started=$(date +%s)
work=$(mktemp -d /tmp/pg_envelope_citus.XXXXXX)
trap 'rm -rf "$work"' EXIT
log=$work/build.log
echo "== Citus: building $version from $tarball with $(nproc) jobs (log: $log, kept on failure)"
fail() {
  echo "== Citus: $1 failed; last lines of the build log:" >&2
  tail -40 "$log" >&2
  trap - EXIT
  exit 1
}
tar xzf "$tarball" -C "$work"
src=$work/$srcdir_name
# PostgreSQL 15.20 exports have_createdb_privilege(), which Citus 13.2.2 defines itself.
server_inc=$("$PG_CONFIG" --includedir-server)
if [ -n "$patch_file" ] && grep -q 'have_createdb_privilege' "$server_inc/commands/dbcommands.h" 2>/dev/null; then
  if patch -d "$src" -p1 -N --dry-run <"$patch_file" >>"$log" 2>&1; then
    patch -d "$src" -p1 -N <"$patch_file" >>"$log" 2>&1 || fail "patch $patch_file"
    echo "   applied $(basename "$patch_file")"
  else
    echo "   $(basename "$patch_file") does not apply (already in the source?): not applied"
  fi
fi
(cd "$src" && ./configure PG_CONFIG="$PG_CONFIG" --without-libcurl) >>"$log" 2>&1 || fail configure
make -C "$src" -j"$(nproc)" with_llvm=no >>"$log" 2>&1 || fail make
rm -rf "$cache.tmp"
mkdir -p "$cache.tmp/root"
make -C "$src" install with_llvm=no DESTDIR="$cache.tmp/root" >>"$log" 2>&1 || fail "make install"
touch "$cache.tmp/complete"
mkdir -p "$(dirname "$cache")"
rm -rf "$cache" && mv "$cache.tmp" "$cache"
# older builds of other tarballs or PostgreSQL versions are no longer needed
find "$cache_root/citus" -mindepth 1 -maxdepth 1 ! -path "$cache" -exec rm -rf {} +
install_from_cache
echo "== Citus $version built in $(( $(date +%s) - started )) s and installed into $pkglibdir" \
     "(cached in $cache)"
