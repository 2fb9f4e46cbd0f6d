// SPI access to the key tables. Every statement is fully schema-qualified and uses
// OPERATOR(pg_catalog.=) so a caller's search_path cannot redirect it, and runs as
// the tables' owner inside SECURITY_RESTRICTED_OPERATION.
#include "guard.hpp"

extern "C" {
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
}

#include <cstring>

#include "key_store.hpp"

namespace pg_envelope::key_store {

namespace {

// One SPI connection with the user switched to the key tables' owner. finish() on the
// success path; on an error the transaction abort cleans up SPI, and the destructor
// only restores the user id (PostgreSQL's abort would as well).
class SpiSession {
 public:
  SpiSession() {
    pg_call([] { SPI_connect(); });
    connected_ = true;
    Oid owner = table_owner();
    GetUserIdAndSecContext(&saved_user_, &saved_sec_);
    SetUserIdAndSecContext(owner, saved_sec_ | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
    switched_ = true;
  }
  ~SpiSession() {
    if (switched_) SetUserIdAndSecContext(saved_user_, saved_sec_);
  }
  SpiSession(const SpiSession&) = delete;
  SpiSession& operator=(const SpiSession&) = delete;

  void finish() {
    SetUserIdAndSecContext(saved_user_, saved_sec_);
    switched_ = false;
    pg_call([] { SPI_finish(); });
    connected_ = false;
  }

  // Executes a statement with parameters; returns SPI_processed.
  uint64 exec(const char* sql, int nargs, Oid* types, Datum* values, const char* nulls, bool read_only,
              int expected_rc) {
    int rc = pg_call([&] { return SPI_execute_with_args(sql, nargs, types, values, nulls, read_only, 0); });
    if (rc != expected_rc)
      throw Error(sqlstate::kInternalError, std::string("pg_envelope key table statement failed: ") +
                                                SPI_result_code_string(rc));
    return SPI_processed;
  }

 private:
  static Oid table_owner() {
    // Resolved by schema and name, never through search_path.
    Oid nsp = pg_call([] { return get_namespace_oid("envelope", true); });
    Oid rel = nsp == InvalidOid ? InvalidOid : pg_call([nsp] { return get_relname_relid("key", nsp); });
    if (rel == InvalidOid)
      throw Error(sqlstate::kObjectNotInPrerequisiteState, "extension \"pg_envelope\" is not installed in this database",
                  "", "Run CREATE EXTENSION pg_envelope.");
    HeapTuple tup = pg_call([rel] { return SearchSysCache1(RELOID, ObjectIdGetDatum(rel)); });
    if (!HeapTupleIsValid(tup)) throw Error(sqlstate::kInternalError, "cache lookup failed for envelope.key");
    Oid owner = reinterpret_cast<Form_pg_class>(GETSTRUCT(tup))->relowner;
    ReleaseSysCache(tup);
    return owner;
  }

  bool connected_ = false;
  bool switched_ = false;
  Oid saved_user_ = InvalidOid;
  int saved_sec_ = 0;
};

Datum text_datum(std::string_view s) {
  return PointerGetDatum(pg_call([s] { return cstring_to_text_with_len(s.data(), static_cast<int>(s.size())); }));
}

std::string get_text(int row, int col) {
  bool isnull = false;
  Datum d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);
  if (isnull) return {};
  char* s = pg_call([d] { return TextDatumGetCString(d); });
  std::string out(s);
  pfree(s);
  return out;
}

std::int32_t get_int(int row, int col) {
  bool isnull = false;
  Datum d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);
  return isnull ? 0 : DatumGetInt32(d);
}

Bytes get_bytea(int row, int col) {
  bool isnull = false;
  Datum d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);
  if (isnull) return {};
  bytea* b = pg_call([d] { return DatumGetByteaPP(d); });
  const auto* p = reinterpret_cast<const std::uint8_t*>(VARDATA_ANY(b));
  return Bytes(p, p + VARSIZE_ANY_EXHDR(b));
}

Datum int_datum(std::uint32_t v) { return Int32GetDatum(static_cast<std::int32_t>(v)); }

}  // namespace

std::optional<KeyRecord> find_key(std::string_view name, bool for_update) {
  SpiSession spi;
  Oid types[1] = {TEXTOID};
  Datum values[1] = {text_datum(name)};
  const char* sql = for_update
                        ? "SELECT key_id, name, kms, kek, state, current_version FROM envelope.key "
                          "WHERE name OPERATOR(pg_catalog.=) $1 FOR UPDATE"
                        : "SELECT key_id, name, kms, kek, state, current_version FROM envelope.key "
                          "WHERE name OPERATOR(pg_catalog.=) $1";
  uint64 n = spi.exec(sql, 1, types, values, nullptr, !for_update, for_update ? SPI_OK_SELECT : SPI_OK_SELECT);
  std::optional<KeyRecord> out;
  if (n == 1) {
    KeyRecord k;
    k.key_id = static_cast<std::uint32_t>(get_int(0, 1));
    k.name = get_text(0, 2);
    k.kms = get_text(0, 3);
    k.kek = get_text(0, 4);
    std::string state = get_text(0, 5);
    k.destroyed = state == "destroyed";
    k.disabled = state == "disabled";
    k.current_version = static_cast<std::uint32_t>(get_int(0, 6));
    out = std::move(k);
  }
  spi.finish();
  return out;
}

constexpr const char* kDekColumns =
    "SELECT k.key_id, k.name, k.kms, k.kek, k.state, k.current_version, d.version, d.state, d.wrapped "
    "FROM envelope.data_key d JOIN envelope.key k ON k.key_id OPERATOR(pg_catalog.=) d.key_id ";

DekRecord dek_row(int row) {
  DekRecord r;
  r.key.key_id = static_cast<std::uint32_t>(get_int(row, 1));
  r.key.name = get_text(row, 2);
  r.key.kms = get_text(row, 3);
  r.key.kek = get_text(row, 4);
  std::string key_state = get_text(row, 5);
  r.key.destroyed = key_state == "destroyed";
  r.key.disabled = key_state == "disabled";
  r.key.current_version = static_cast<std::uint32_t>(get_int(row, 6));
  r.version = static_cast<std::uint32_t>(get_int(row, 7));
  r.destroyed = get_text(row, 8) == "destroyed";
  r.wrapped = get_bytea(row, 9);
  return r;
}

std::optional<DekRecord> find_dek(DekId id) {
  SpiSession spi;
  Oid types[2] = {INT4OID, INT4OID};
  Datum values[2] = {int_datum(id.key_id), int_datum(id.version)};
  std::string sql = std::string(kDekColumns) +
                    "WHERE d.key_id OPERATOR(pg_catalog.=) $1 AND d.version OPERATOR(pg_catalog.=) $2";
  uint64 n = spi.exec(sql.c_str(), 2, types, values, nullptr, true, SPI_OK_SELECT);
  std::optional<DekRecord> out;
  if (n == 1) out = dek_row(0);
  spi.finish();
  return out;
}

std::vector<DekRecord> live_deks(std::uint32_t key_id) {
  SpiSession spi;
  Oid types[1] = {INT4OID};
  Datum values[1] = {int_datum(key_id)};
  std::string sql = std::string(kDekColumns) +
                    "WHERE d.key_id OPERATOR(pg_catalog.=) $1 AND d.wrapped IS NOT NULL ORDER BY d.version FOR UPDATE OF d";
  uint64 n = spi.exec(sql.c_str(), 1, types, values, nullptr, false, SPI_OK_SELECT);
  std::vector<DekRecord> out;
  for (uint64 i = 0; i < n; ++i) out.push_back(dek_row(static_cast<int>(i)));
  spi.finish();
  return out;
}

void update_wrapped(std::uint32_t key_id, std::uint32_t version, ByteView wrapped) {
  SpiSession spi;
  Oid types[3] = {INT4OID, INT4OID, BYTEAOID};
  Datum values[3] = {int_datum(key_id), int_datum(version), PointerGetDatum(pg_varlena(wrapped))};
  spi.exec("UPDATE envelope.data_key SET wrapped = $3 WHERE key_id OPERATOR(pg_catalog.=) $1 "
           "AND version OPERATOR(pg_catalog.=) $2",
           3, types, values, nullptr, false, SPI_OK_UPDATE);
  spi.finish();
}

void set_kek(std::uint32_t key_id, std::string_view kek) {
  SpiSession spi;
  Oid types[2] = {INT4OID, TEXTOID};
  Datum values[2] = {int_datum(key_id), text_datum(kek)};
  spi.exec("UPDATE envelope.key SET kek = $2 WHERE key_id OPERATOR(pg_catalog.=) $1", 2, types, values, nullptr,
           false, SPI_OK_UPDATE);
  spi.finish();
}

std::optional<DekRecord> find_any_live_dek(std::string_view kms) {
  SpiSession spi;
  Oid types[1] = {TEXTOID};
  Datum values[1] = {text_datum(kms)};
  std::string sql = std::string(kDekColumns) +
                    "WHERE k.kms OPERATOR(pg_catalog.=) $1 AND d.wrapped IS NOT NULL "
                    "ORDER BY d.created_at DESC LIMIT 1";
  uint64 n = spi.exec(sql.c_str(), 1, types, values, nullptr, true, SPI_OK_SELECT);
  std::optional<DekRecord> out;
  if (n == 1) out = dek_row(0);
  spi.finish();
  return out;
}

bool key_id_in_use(std::uint32_t key_id) {
  SpiSession spi;
  Oid types[1] = {INT4OID};
  Datum values[1] = {int_datum(key_id)};
  uint64 n = spi.exec("SELECT 1 FROM envelope.key WHERE key_id OPERATOR(pg_catalog.=) $1", 1, types, values,
                      nullptr, true, SPI_OK_SELECT);
  spi.finish();
  return n > 0;
}

void insert_key(const KeyRecord& key) {
  SpiSession spi;
  Oid types[4] = {INT4OID, TEXTOID, TEXTOID, TEXTOID};
  Datum values[4] = {int_datum(key.key_id), text_datum(key.name), text_datum(key.kms), text_datum(key.kek)};
  spi.exec("INSERT INTO envelope.key (key_id, name, kms, kek, current_version) VALUES ($1, $2, $3, $4, 1)", 4,
           types, values, nullptr, false, SPI_OK_INSERT);
  spi.finish();
}

void insert_dek(std::uint32_t key_id, std::uint32_t version, ByteView wrapped) {
  SpiSession spi;
  Oid types[3] = {INT4OID, INT4OID, BYTEAOID};
  Datum values[3] = {int_datum(key_id), int_datum(version), PointerGetDatum(pg_varlena(wrapped))};
  spi.exec("INSERT INTO envelope.data_key (key_id, version, wrapped) VALUES ($1, $2, $3)", 3, types, values,
           nullptr, false, SPI_OK_INSERT);
  spi.finish();
}

void set_current_version(std::uint32_t key_id, std::uint32_t version) {
  SpiSession spi;
  Oid types[2] = {INT4OID, INT4OID};
  Datum values[2] = {int_datum(key_id), int_datum(version)};
  spi.exec(
      "UPDATE envelope.key SET current_version = $2 WHERE key_id OPERATOR(pg_catalog.=) $1", 2, types, values,
      nullptr, false, SPI_OK_UPDATE);
  spi.exec(
      "UPDATE envelope.data_key SET state = 'retired' WHERE key_id OPERATOR(pg_catalog.=) $1 "
      "AND version OPERATOR(pg_catalog.<>) $2 AND state OPERATOR(pg_catalog.=) 'active'",
      2, types, values, nullptr, false, SPI_OK_UPDATE);
  spi.finish();
}

std::optional<KmsConfig> find_kms(std::string_view name) {
  SpiSession spi;
  Oid types[1] = {TEXTOID};
  Datum values[1] = {text_datum(name)};
  uint64 n = spi.exec("SELECT name, provider, options::text FROM envelope.kms WHERE name OPERATOR(pg_catalog.=) $1",
                      1, types, values, nullptr, true, SPI_OK_SELECT);
  std::optional<KmsConfig> out;
  if (n == 1) out = KmsConfig{get_text(0, 1), get_text(0, 2), get_text(0, 3)};
  spi.finish();
  return out;
}

void insert_kms(const KmsConfig& kms) {
  SpiSession spi;
  Oid types[3] = {TEXTOID, TEXTOID, TEXTOID};
  Datum values[3] = {text_datum(kms.name), text_datum(kms.provider), text_datum(kms.options_json)};
  spi.exec("INSERT INTO envelope.kms (name, provider, options) VALUES ($1, $2, $3::pg_catalog.jsonb)", 3, types,
           values, nullptr, false, SPI_OK_INSERT);
  spi.finish();
}

void update_kms_options(std::string_view name, std::string_view options_json) {
  SpiSession spi;
  Oid types[2] = {TEXTOID, TEXTOID};
  Datum values[2] = {text_datum(name), text_datum(options_json)};
  spi.exec("UPDATE envelope.kms SET options = $2::pg_catalog.jsonb WHERE name OPERATOR(pg_catalog.=) $1", 2, types,
           values, nullptr, false, SPI_OK_UPDATE);
  spi.finish();
}

void delete_kms(std::string_view name) {
  SpiSession spi;
  Oid types[1] = {TEXTOID};
  Datum values[1] = {text_datum(name)};
  spi.exec("DELETE FROM envelope.kms WHERE name OPERATOR(pg_catalog.=) $1", 1, types, values, nullptr, false,
           SPI_OK_DELETE);
  spi.finish();
}

std::int64_t count_keys_using_kms(std::string_view name) {
  SpiSession spi;
  Oid types[1] = {TEXTOID};
  Datum values[1] = {text_datum(name)};
  spi.exec("SELECT pg_catalog.count(*)::integer FROM envelope.key WHERE kms OPERATOR(pg_catalog.=) $1", 1, types,
           values, nullptr, true, SPI_OK_SELECT);
  std::int64_t n = get_int(0, 1);
  spi.finish();
  return n;
}

void destroy_key(std::uint32_t key_id) {
  SpiSession spi;
  Oid types[1] = {INT4OID};
  Datum values[1] = {int_datum(key_id)};
  spi.exec(
      "UPDATE envelope.data_key SET wrapped = NULL, state = 'destroyed', destroyed_at = pg_catalog.now() "
      "WHERE key_id OPERATOR(pg_catalog.=) $1 AND state OPERATOR(pg_catalog.<>) 'destroyed'",
      1, types, values, nullptr, false, SPI_OK_UPDATE);
  spi.exec(
      "UPDATE envelope.key SET state = 'destroyed', destroyed_at = pg_catalog.now() "
      "WHERE key_id OPERATOR(pg_catalog.=) $1 AND state OPERATOR(pg_catalog.<>) 'destroyed'",
      1, types, values, nullptr, false, SPI_OK_UPDATE);
  spi.finish();
}

void set_key_disabled(std::uint32_t key_id, bool disabled) {
  SpiSession spi;
  Oid types[2] = {INT4OID, TEXTOID};
  Datum values[2] = {int_datum(key_id), text_datum(disabled ? "disabled" : "active")};
  spi.exec(
      "UPDATE envelope.key SET state = $2 "
      "WHERE key_id OPERATOR(pg_catalog.=) $1 AND state OPERATOR(pg_catalog.<>) 'destroyed'",
      2, types, values, nullptr, false, SPI_OK_UPDATE);
  spi.finish();
}

}  // namespace pg_envelope::key_store
