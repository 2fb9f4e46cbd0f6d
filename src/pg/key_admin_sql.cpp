// Key-management SQL on the key tables (see key_admin_sql.hpp). Every statement names
// envelope.* and pg_catalog.* explicitly and compares with OPERATOR(pg_catalog.=);
// OwnerSpi pins search_path as well, so neither a caller's search_path nor its
// temporary objects can take part in a statement run with the owner's privileges.
#include "guard.hpp"

extern "C" {
#include "executor/spi.h"
#include "utils/lsyscache.h"
}

#include "extension_objects.hpp"
#include "key_admin_sql.hpp"
#include "key_catalog.hpp"
#include "owner_spi.hpp"

namespace pg_envelope::key_admin_sql {

namespace {

KeyRecord key_row(const OwnerSpi& spi, std::uint64_t row, int first_col) {
  KeyRecord k;
  k.key_id = static_cast<std::uint32_t>(spi.int4_at(row, first_col));
  k.name = spi.text_at(row, first_col + 1);
  k.kms = spi.text_at(row, first_col + 2);
  k.kek = spi.text_at(row, first_col + 3);
  std::string state = spi.text_at(row, first_col + 4);
  k.destroyed = state == "destroyed";
  k.disabled = state == "disabled";
  k.current_version = static_cast<std::uint32_t>(spi.int4_at(row, first_col + 5));
  return k;
}

#define PGENV_DEK_SELECT "SELECT k.key_id, k.name, k.kms, k.kek, k.state, k.current_version, d.version, d.state, d.wrapped"
#define PGENV_DEK_FROM " FROM envelope.data_key d JOIN envelope.key k ON k.key_id OPERATOR(pg_catalog.=) d.key_id "
constexpr const char* kDekColumns = PGENV_DEK_SELECT PGENV_DEK_FROM;

DekRecord dek_row(const OwnerSpi& spi, std::uint64_t row) {
  DekRecord r;
  r.key = key_row(spi, row, 1);
  r.version = static_cast<std::uint32_t>(spi.int4_at(row, 7));
  r.destroyed = spi.text_at(row, 8) == "destroyed";
  r.wrapped = spi.bytea_at(row, 9);
  return r;
}

// One statement that changes rows, in its own session.
void change(const char* sql, std::initializer_list<SpiParam> params, int expected_rc) {
  OwnerSpi spi;
  spi.exec(sql, params, expected_rc);
  spi.finish();
}

}  // namespace

std::optional<KeyRecord> find_key(std::string_view name, bool for_update) {
  OwnerSpi spi;
  const char* sql = for_update
                        ? "SELECT key_id, name, kms, kek, state, current_version FROM envelope.key "
                          "WHERE name OPERATOR(pg_catalog.=) $1 FOR UPDATE"
                        : "SELECT key_id, name, kms, kek, state, current_version FROM envelope.key "
                          "WHERE name OPERATOR(pg_catalog.=) $1";
  std::optional<KeyRecord> out;
  if (spi.exec(sql, {text_param(name)}, SPI_OK_SELECT) == 1) out = key_row(spi, 0, 1);
  spi.finish();
  return out;
}

std::vector<DekRecord> live_deks(std::uint32_t key_id) {
  OwnerSpi spi;
  std::string sql = std::string(kDekColumns) +
                    "WHERE d.key_id OPERATOR(pg_catalog.=) $1 AND d.wrapped IS NOT NULL "
                    "ORDER BY d.version FOR UPDATE OF d";
  std::uint64_t n = spi.exec(sql.c_str(), {int4_param(key_id)}, SPI_OK_SELECT);
  std::vector<DekRecord> out;
  for (std::uint64_t i = 0; i < n; ++i) out.push_back(dek_row(spi, i));
  spi.finish();
  return out;
}

// envelope.data_key.wrapped_at exists from 0.2.0 (a 0.1.0 schema is used with
// envelope.version_check off).
bool has_wrapped_at() {
  const ext::Objects& o = ext::objects();
  return pg_call([&o] { return get_attnum(o.data_key_table, "wrapped_at") != InvalidAttrNumber; });
}

std::vector<DekRecord> wrapped_deks(std::uint32_t key_id) {
  OwnerSpi spi;
  // The DEK columns and, as column 10, when each was wrapped (Unix microseconds).
  constexpr const char* kWhere = "WHERE d.key_id OPERATOR(pg_catalog.=) $1 AND d.wrapped IS NOT NULL ORDER BY d.version";
  const char* sql = has_wrapped_at()
                        ? PGENV_DEK_SELECT ", (pg_catalog.date_part('epoch', d.wrapped_at) OPERATOR(pg_catalog.*) "
                                           "1000000)::pg_catalog.int8" PGENV_DEK_FROM
                        : PGENV_DEK_SELECT ", 0::pg_catalog.int8" PGENV_DEK_FROM;
  std::uint64_t n = spi.exec((std::string(sql) + kWhere).c_str(), {int4_param(key_id)}, SPI_OK_SELECT);
  std::vector<DekRecord> out;
  for (std::uint64_t i = 0; i < n; ++i) {
    out.push_back(dek_row(spi, i));
    out.back().wrapped_at_us = spi.int8_at(i, 10);
  }
  spi.finish();
  return out;
}

std::optional<DekRecord> find_any_live_dek(std::string_view kms) {
  bool indexed = false;
  std::optional<DekRecord> newest = key_catalog::newest_live_dek(kms, indexed);
  if (indexed) return newest;
  // A schema without the created_at index (0.1.0, only with envelope.version_check off).
  OwnerSpi spi;
  std::string sql = std::string(kDekColumns) +
                    "WHERE k.kms OPERATOR(pg_catalog.=) $1 AND d.wrapped IS NOT NULL "
                    "ORDER BY d.created_at DESC LIMIT 1";
  std::optional<DekRecord> out;
  if (spi.exec(sql.c_str(), {text_param(kms)}, SPI_OK_SELECT) == 1) out = dek_row(spi, 0);
  spi.finish();
  return out;
}

bool key_id_in_use(std::uint32_t key_id) {
  OwnerSpi spi;
  std::uint64_t n = spi.exec("SELECT 1 FROM envelope.key WHERE key_id OPERATOR(pg_catalog.=) $1",
                             {int4_param(key_id)}, SPI_OK_SELECT);
  spi.finish();
  return n > 0;
}

std::int64_t count_keys_using_kms(std::string_view name) {
  OwnerSpi spi;
  spi.exec("SELECT pg_catalog.count(*) FROM envelope.key WHERE kms OPERATOR(pg_catalog.=) $1", {text_param(name)},
           SPI_OK_SELECT);
  std::int64_t n = spi.int8_at(0, 1);
  spi.finish();
  return n;
}

void insert_key(const KeyRecord& key) {
  change("INSERT INTO envelope.key (key_id, name, kms, kek, current_version) VALUES ($1, $2, $3, $4, 1)",
         {int4_param(key.key_id), text_param(key.name), text_param(key.kms), text_param(key.kek)}, SPI_OK_INSERT);
}

void insert_dek(std::uint32_t key_id, std::uint32_t version, ByteView wrapped) {
  change("INSERT INTO envelope.data_key (key_id, version, wrapped) VALUES ($1, $2, $3)",
         {int4_param(key_id), int4_param(version), bytea_param(wrapped)}, SPI_OK_INSERT);
}

void update_wrapped(std::uint32_t key_id, std::uint32_t version, ByteView wrapped) {
  change(has_wrapped_at() ? "UPDATE envelope.data_key SET wrapped = $3, wrapped_at = pg_catalog.now() "
                            "WHERE key_id OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2"
                          : "UPDATE envelope.data_key SET wrapped = $3 WHERE key_id OPERATOR(pg_catalog.=) $1 "
         "AND version OPERATOR(pg_catalog.=) $2",
         {int4_param(key_id), int4_param(version), bytea_param(wrapped)}, SPI_OK_UPDATE);
}

void set_kek(std::uint32_t key_id, std::string_view kek) {
  change("UPDATE envelope.key SET kek = $2 WHERE key_id OPERATOR(pg_catalog.=) $1",
         {int4_param(key_id), text_param(kek)}, SPI_OK_UPDATE);
}

void set_current_version(std::uint32_t key_id, std::uint32_t version) {
  OwnerSpi spi;
  spi.exec("UPDATE envelope.key SET current_version = $2 WHERE key_id OPERATOR(pg_catalog.=) $1",
           {int4_param(key_id), int4_param(version)}, SPI_OK_UPDATE);
  spi.exec("UPDATE envelope.data_key SET state = 'retired' WHERE key_id OPERATOR(pg_catalog.=) $1 "
           "AND version OPERATOR(pg_catalog.<>) $2 AND state OPERATOR(pg_catalog.=) 'active'",
           {int4_param(key_id), int4_param(version)}, SPI_OK_UPDATE);
  spi.finish();
}

void insert_kms(const KmsConfig& kms) {
  change("INSERT INTO envelope.kms (name, provider, options) VALUES ($1, $2, $3::pg_catalog.jsonb)",
         {text_param(kms.name), text_param(kms.provider), text_param(kms.options_json)}, SPI_OK_INSERT);
}

void update_kms_options(std::string_view name, std::string_view options_json) {
  change("UPDATE envelope.kms SET options = $2::pg_catalog.jsonb WHERE name OPERATOR(pg_catalog.=) $1",
         {text_param(name), text_param(options_json)}, SPI_OK_UPDATE);
}

void delete_kms(std::string_view name) {
  change("DELETE FROM envelope.kms WHERE name OPERATOR(pg_catalog.=) $1", {text_param(name)}, SPI_OK_DELETE);
}

void destroy_key(std::uint32_t key_id) {
  OwnerSpi spi;
  spi.exec("UPDATE envelope.data_key SET wrapped = NULL, state = 'destroyed', destroyed_at = pg_catalog.now() "
           "WHERE key_id OPERATOR(pg_catalog.=) $1 AND state OPERATOR(pg_catalog.<>) 'destroyed'",
           {int4_param(key_id)}, SPI_OK_UPDATE);
  // The file the wrapped DEKs' old row versions are in: envelope.verify_destroyed()
  // checks that the table was rewritten since.
  // (Not in a 0.1.0 schema, used with envelope.version_check off.)
  const ext::Objects& o = ext::objects();
  bool has_filenode = pg_call([&o] { return get_attnum(o.key_table, "destroyed_filenode") != InvalidAttrNumber; });
  spi.exec(has_filenode
               ? "UPDATE envelope.key SET state = 'destroyed', destroyed_at = pg_catalog.now(), "
                 "destroyed_filenode = pg_catalog.pg_relation_filenode('envelope.data_key'::pg_catalog.regclass) "
                 "WHERE key_id OPERATOR(pg_catalog.=) $1 AND state OPERATOR(pg_catalog.<>) 'destroyed'"
               : "UPDATE envelope.key SET state = 'destroyed', destroyed_at = pg_catalog.now() "
                 "WHERE key_id OPERATOR(pg_catalog.=) $1 AND state OPERATOR(pg_catalog.<>) 'destroyed'",
           {int4_param(key_id)}, SPI_OK_UPDATE);
  spi.finish();
}

void set_key_disabled(std::uint32_t key_id, bool disabled) {
  change("UPDATE envelope.key SET state = $2 "
         "WHERE key_id OPERATOR(pg_catalog.=) $1 AND state OPERATOR(pg_catalog.<>) 'destroyed'",
         {int4_param(key_id), text_param(disabled ? "disabled" : "active")}, SPI_OK_UPDATE);
}

bool insert_grant(std::string_view pattern, Oid grantee, std::string_view privilege, Oid granted_by) {
  OwnerSpi spi;
  std::uint64_t n = spi.exec(
      "INSERT INTO envelope.key_grant (pattern, grantee, privilege, granted_by) "
      "VALUES ($1, $2::pg_catalog.oid::pg_catalog.regrole, $3, $4::pg_catalog.oid::pg_catalog.regrole) "
      "ON CONFLICT (pattern, grantee, privilege) DO NOTHING",
      {text_param(pattern), oid_param(grantee), text_param(privilege), oid_param(granted_by)}, SPI_OK_INSERT);
  spi.finish();
  return n > 0;
}

bool delete_grant(std::string_view pattern, Oid grantee, std::string_view privilege) {
  OwnerSpi spi;
  std::uint64_t n = spi.exec(
      "DELETE FROM envelope.key_grant WHERE pattern OPERATOR(pg_catalog.=) $1 "
      "AND grantee::pg_catalog.oid OPERATOR(pg_catalog.=) $2 AND privilege OPERATOR(pg_catalog.=) $3",
      {text_param(pattern), oid_param(grantee), text_param(privilege)}, SPI_OK_DELETE);
  spi.finish();
  return n > 0;
}

}  // namespace pg_envelope::key_admin_sql
