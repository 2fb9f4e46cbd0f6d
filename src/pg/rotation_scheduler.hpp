// Scheduled rotation (docs/lifecycle.md): a background worker per database named in
// envelope.scheduler_databases carries out the per-key policies of
// envelope.rotation_policy (set with envelope.set_rotation_policy()): every
// envelope.scheduler_naptime it rotates each key whose next rotation is due, re-wraps
// its DEKs when the policy says so, and starts the background re-encryption of the
// key's protected columns when the policy says so. It acts as the extension's owner
// (who administers every key); the state is in the table, so it survives restarts.
#pragma once

#include <string>

namespace pg_envelope::rotation_scheduler {

// envelope.scheduler_databases (postmaster) and envelope.scheduler_naptime (reload).
void define_gucs();
// Registers one worker per database named (from _PG_init, when preloaded).
void register_workers();
// Whether the current database is one the scheduler runs in.
bool runs_in_current_database();

}  // namespace pg_envelope::rotation_scheduler
