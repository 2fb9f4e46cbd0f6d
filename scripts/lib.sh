# Shared helpers for scripts/*.sh (sourced, not run).

# Runs a command as an unprivileged user: initdb and postgres refuse to run as root,
# so as root we use the "postgres" OS user the Debian package created.
as_db_user() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# A temporary directory the database user can write to.
db_tmpdir() {
  local d
  d=$(mktemp -d "/tmp/pg_envelope_$1.XXXXXX")
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$d"; fi
  echo "$d"
}
