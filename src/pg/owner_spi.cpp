// SPI as the key tables' owner with a pinned search_path (see owner_spi.hpp).
#include "guard.hpp"

extern "C" {
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/guc.h"
}

#include "extension_objects.hpp"
#include "owner_spi.hpp"

namespace pg_envelope {

namespace {

// What PostgreSQL itself uses for maintenance commands (GUC_SAFE_SEARCH_PATH in 17).
constexpr const char* kSafeSearchPath = "pg_catalog, pg_temp";

int pin_search_path() {
  int level = NewGUCNestLevel();
  (void)set_config_option("search_path", kSafeSearchPath, PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0,
                          false);
  return level;
}

}  // namespace

SpiParam text_param(std::string_view s) {
  return {TEXTOID, PointerGetDatum(pg_varlena({reinterpret_cast<const std::uint8_t*>(s.data()), s.size()}))};
}

SpiParam int4_param(std::uint32_t v) { return {INT4OID, Int32GetDatum(static_cast<std::int32_t>(v))}; }

SpiParam bytea_param(ByteView b) { return {BYTEAOID, PointerGetDatum(pg_varlena(b))}; }

SpiParam oid_param(Oid v) { return {OIDOID, ObjectIdGetDatum(v)}; }

OwnerSpi::OwnerSpi(bool as_owner, bool nonatomic) : as_owner_(as_owner), nonatomic_(nonatomic) {
  Oid owner = as_owner ? ext::objects().owner : InvalidOid;
  pg_call([nonatomic] { SPI_connect_ext(nonatomic ? SPI_OPT_NONATOMIC : 0); });
  connected_ = true;
  GetUserIdAndSecContext(&saved_user_, &saved_sec_);
  if (as_owner) {
    SetUserIdAndSecContext(owner, saved_sec_ | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
    switched_ = true;
  }
  guc_level_ = pg_call([] { return pin_search_path(); });
}

void OwnerSpi::commit() {
  int level = guc_level_;
  pg_call([level] { AtEOXact_GUC(true, level); });
  pg_call([] { SPI_commit(); });
  guc_level_ = pg_call([] { return pin_search_path(); });
}

OwnerSpi::~OwnerSpi() {
  // Only on an error path (finish() ran otherwise): the transaction is aborting, and
  // its abort pops the GUC level and SPI; the user id is restored here at once.
  if (switched_) SetUserIdAndSecContext(saved_user_, saved_sec_);
}

std::uint64_t OwnerSpi::exec(const char* sql, std::span<const SpiParam> params, int expected_rc) {
  constexpr int kMaxParams = 16;
  Oid types[kMaxParams];
  Datum values[kMaxParams];
  char nulls[kMaxParams];
  int n = 0;
  for (const SpiParam& p : params) {
    if (n == kMaxParams) throw Error(sqlstate::kInternalError, "too many parameters for a key table statement");
    types[n] = p.type;
    values[n] = p.value;
    nulls[n] = p.isnull ? 'n' : ' ';
    ++n;
  }
  // Not read-only: each statement takes a new snapshot (READ COMMITTED), so a key
  // change committed by another session after this statement started is seen. A
  // parallel operation cannot take new snapshots: it reads with its own.
  bool read_only = IsInParallelMode();
  int rc = pg_call([&] { return SPI_execute_with_args(sql, n, types, values, nulls, read_only, 0); });
  if (rc != expected_rc)
    throw Error(sqlstate::kInternalError,
                std::string("pg_envelope key table statement failed: ") + SPI_result_code_string(rc));
  return SPI_processed;
}

bool OwnerSpi::isnull_at(std::uint64_t row, int col) const {
  bool null = false;
  (void)SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &null);
  return null;
}

std::string OwnerSpi::text_at(std::uint64_t row, int col) const {
  bool null = false;
  Datum d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &null);
  if (null) return {};
  text* t = pg_call([d] { return DatumGetTextPP(d); });
  return std::string(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

std::int32_t OwnerSpi::int4_at(std::uint64_t row, int col) const {
  bool null = false;
  Datum d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &null);
  return null ? 0 : DatumGetInt32(d);
}

std::int64_t OwnerSpi::int8_at(std::uint64_t row, int col) const {
  bool null = false;
  Datum d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &null);
  return null ? 0 : DatumGetInt64(d);
}

Bytes OwnerSpi::bytea_at(std::uint64_t row, int col) const {
  bool null = false;
  Datum d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &null);
  if (null) return {};
  bytea* b = pg_call([d] { return DatumGetByteaPP(d); });
  const auto* p = reinterpret_cast<const std::uint8_t*>(VARDATA_ANY(b));
  return Bytes(p, p + VARSIZE_ANY_EXHDR(b));
}

void OwnerSpi::finish() {
  int level = guc_level_;
  pg_call([level] { AtEOXact_GUC(true, level); });
  if (switched_) SetUserIdAndSecContext(saved_user_, saved_sec_);
  switched_ = false;
  pg_call([] { SPI_finish(); });
  connected_ = false;
}

}  // namespace pg_envelope
