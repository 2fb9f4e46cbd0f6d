#!/usr/bin/env bash
# One step from "installed" to "working" for the built-in local KMS on an existing
# cluster: creates the master key (never overwriting one), preloads pg_envelope and
# points envelope.master_key_file at the key. Restart the server afterwards.
#
#   sudo bash scripts/enable-local-kms.sh --cluster 15/main          # Debian cluster
#   bash scripts/enable-local-kms.sh --pgdata /path/to/data [--key-file F]
#
# The master key is the root of trust: back it up, apart from database backups.
set -euo pipefail

cluster="" pgdata="" key_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cluster) cluster=$2; shift 2 ;;
    --pgdata) pgdata=$2; shift 2 ;;
    --key-file) key_file=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [ -z "$cluster" ] && [ -z "$pgdata" ]; then cluster=15/main; fi

if [ -n "$cluster" ]; then
  version=${cluster%/*} name=${cluster#*/}
  confdir=/etc/postgresql/$version/$name
  [ -f "$confdir/postgresql.conf" ] || { echo "no Debian cluster $cluster ($confdir)" >&2; exit 1; }
  owner=$(stat -c %U "$confdir/postgresql.conf")
  key_file=${key_file:-/etc/pg_envelope/$version-$name.key}
  current=$(pg_conftool -s "$version" "$name" show shared_preload_libraries 2>/dev/null | tr -d "'" || true)
  target="$confdir/conf.d/pg_envelope.conf"
  mkdir -p "$confdir/conf.d"
  restart="sudo pg_ctlcluster $version $name restart"
else
  [ -f "$pgdata/postgresql.conf" ] || { echo "no postgresql.conf in $pgdata" >&2; exit 1; }
  owner=$(stat -c %U "$pgdata")
  key_file=${key_file:-$(cd "$pgdata/.." && pwd)/pg_envelope_master.key}
  pgbin=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
  if [ "$(id -un)" = "$owner" ]; then current=$("$pgbin/postgres" -D "$pgdata" -C shared_preload_libraries)
  else current=$(runuser -u "$owner" -- "$pgbin/postgres" -D "$pgdata" -C shared_preload_libraries); fi
  target="$pgdata/postgresql.conf"
  restart="pg_ctl -D $pgdata restart"
fi

case "$(realpath -m "$key_file")/" in
  "$(realpath -m "${pgdata:-/nonexistent}")"/*) echo "refusing to put the master key inside the data directory" >&2; exit 1 ;;
esac

if [ -e "$key_file" ]; then
  echo "keeping the existing master key $key_file"
else
  keydir=$(dirname "$key_file")
  if [ ! -d "$keydir" ]; then   # never change the owner or mode of an existing directory
    mkdir -p -m 700 "$keydir"
    [ "$(id -u)" -eq 0 ] && chown "$owner" "$keydir"
  fi
  (umask 077; openssl rand -hex 32 > "$key_file")
  [ "$(id -u)" -eq 0 ] && chown "$owner" "$key_file"
  echo "created the master key $key_file (mode 600, owner $owner)"
fi

auto_conf=${pgdata:-/var/lib/postgresql/${version:-15}/${name:-main}}/postgresql.auto.conf
if [ -r "$auto_conf" ] && grep -q '^[[:space:]]*shared_preload_libraries' "$auto_conf"; then
  echo "warning: $auto_conf sets shared_preload_libraries (ALTER SYSTEM), which overrides this;" >&2
  echo "         run ALTER SYSTEM RESET shared_preload_libraries or add pg_envelope there." >&2
fi
libs=$(echo "$current" | tr -d ' ')
case ",$libs," in *,pg_envelope,*) ;; *) libs=${libs:+$libs,}pg_envelope ;; esac
# Re-running replaces the block written before instead of adding another.
marker="# pg_envelope (scripts/enable-local-kms.sh)"
if [ -f "$target" ] && grep -qxF "$marker" "$target"; then
  awk -v m="$marker" '$0 == m { skip = 3 } skip > 0 { skip--; next } { print }' "$target" > "$target.tmp"
  cat "$target.tmp" > "$target" && rm -f "$target.tmp"
fi
{
  echo "$marker"
  echo "shared_preload_libraries = '$libs'"
  echo "envelope.master_key_file = '$key_file'"
} >> "$target"
echo "configured $target: shared_preload_libraries = '$libs'"
cat <<MSG

Next:
  1. restart the server:   $restart
  2. in each database:     CREATE EXTENSION pg_envelope;
  3. BACK UP $key_file now, somewhere other than your database backups.
     It is the root of trust: without it no encrypted value can ever be decrypted,
     and anyone holding it and a copy of the database can decrypt everything.
MSG
