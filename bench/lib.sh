# Shared by bench/run.sh and bench/cache.sh (sourced).

# Prints the postgresql.conf settings of a throwaway benchmark cluster: Unix socket
# only, pg_envelope preloaded with the local KMS, durability off.
#   bench_server_settings SOCKET_DIR MASTER_KEY_FILE
bench_server_settings() {
  cat <<EOF2
listen_addresses = ''
unix_socket_directories = '$1'
shared_preload_libraries = 'pg_envelope'
envelope.master_key_file = '$2'
shared_buffers = 1GB
work_mem = 64MB
maintenance_work_mem = 512MB
max_parallel_workers_per_gather = 0
jit = off
fsync = off
synchronous_commit = off
full_page_writes = off
autovacuum = off
max_wal_size = 16GB
checkpoint_timeout = 1h
logging_collector = off
log_min_messages = warning
log_checkpoints = off
EOF2
}
