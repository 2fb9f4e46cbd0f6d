// Roles and key grants: DROP ROLE and DROP OWNED see envelope.key_grant, as they see
// PostgreSQL's own privileges (a ProcessUtility hook; see role_guard.cpp).
#pragma once

namespace pg_envelope::role_guard {

// Installs the hook (from _PG_init, when preloaded).
void register_hook();

}  // namespace pg_envelope::role_guard
