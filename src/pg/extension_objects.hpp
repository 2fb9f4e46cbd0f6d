// The extension's own catalog objects in this database, found by OID and never
// through search_path: the pg_envelope extension, its schema, the key tables and
// their indexes, and the role that owns them. Resolved once per backend and again
// after a relcache invalidation of one of the tables (DROP/CREATE EXTENSION) or of
// every relation.
#pragma once

extern "C" {
#include "postgres.h"
}

namespace pg_envelope::ext {

struct Objects {
  Oid extension = InvalidOid;
  Oid schema = InvalidOid;
  Oid owner = InvalidOid;  // owner of envelope.key: the role SPI runs the key SQL as
  // pg_extension.extowner: the role that ran CREATE EXTENSION (with a trusted install a
  // non-superuser, while the objects belong to the bootstrap superuser). It administers
  // every key (docs/access.md), as a superuser does, without encrypt or decrypt.
  Oid extension_owner = InvalidOid;
  Oid key_table = InvalidOid;
  Oid key_pkey = InvalidOid;       // (key_id)
  Oid key_name_index = InvalidOid;  // (name), unique
  Oid data_key_table = InvalidOid;
  Oid data_key_pkey = InvalidOid;  // (key_id, version)
  Oid data_key_created_index = InvalidOid;  // (created_at); InvalidOid before 0.2.0
  Oid kms_table = InvalidOid;
  Oid kms_pkey = InvalidOid;  // (name)
  // envelope.key_grant (0.2.0 on); InvalidOid in an older schema, where EXECUTE alone
  // decides (only reachable with envelope.version_check off).
  Oid key_grant_table = InvalidOid;
  // Attribute numbers of the columns the direct reads need.
  struct {
    AttrNumber key_id, name, kms, kek, state, current_version;
  } key;
  struct {
    AttrNumber key_id, version, wrapped, state;
  } data_key;
  struct {
    AttrNumber name, provider, options;
  } kms;
  struct {
    AttrNumber pattern, grantee, privilege;
  } key_grant;
  Oid text_collation = InvalidOid;  // of envelope.key.name (and its index)
  char sql_version[64] = "";        // pg_extension.extversion
};

// The objects; Error 55000 "extension is not installed" when pg_envelope is not
// installed in this database, and Error 55000 when its SQL version is not the one
// this library implements (a new library installed without ALTER EXTENSION UPDATE),
// unless envelope.version_check is off or the extension is being created or updated.
const Objects& objects();

// envelope.version_check (superuser; on by default).
void define_version_check_guc();

// True when relid is one of the key tables (envelope.key, data_key, kms, key_grant)
// as last resolved. Plain reads only: safe in an invalidation callback.
bool is_key_table(Oid relid) noexcept;
// Whether this backend has resolved the key tables' OIDs once (is_key_table() can
// answer).
bool key_tables_known() noexcept;
// Whether the objects are resolved now and their SQL version is the library's.
bool resolved_at_library_version() noexcept;

// Forgets the resolved objects (from the relcache callback; plain writes only).
void forget() noexcept;

}  // namespace pg_envelope::ext
