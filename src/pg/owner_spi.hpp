// SQL that pg_envelope runs on the key tables, through SPI, as the tables' owner.
//
// The caller is authorised by EXECUTE on the SQL function (and the extension's own
// checks), not by privileges on the tables, which PUBLIC cannot read. Running SQL
// with another role's privileges is only safe when nothing in it can resolve to an
// object the caller controls, so a session:
//   * switches to the owner inside SECURITY_RESTRICTED_OPERATION (no temp tables,
//     no SET ROLE, no deferred work of the caller's);
//   * pins search_path to "pg_catalog, pg_temp" for its statements, as PostgreSQL
//     does for maintenance commands: types, functions, operators and collations
//     resolve in pg_catalog before any temporary or caller-owned object, whatever
//     the caller's search_path;
//   * and every statement still qualifies every name (envelope.key,
//     OPERATOR(pg_catalog.=), pg_catalog.now(), ::pg_catalog.jsonb).
// Everything is undone by finish() on success; on an error the transaction's abort
// restores the user, the GUC nest level and SPI.
#pragma once

#include "pg_includes.hpp"

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>

#include "pg_envelope/secure_bytes.hpp"

namespace pg_envelope {

// One statement parameter.
struct SpiParam {
  Oid type;
  Datum value;
  bool isnull = false;
};

SpiParam text_param(std::string_view s);
SpiParam int4_param(std::uint32_t v);
SpiParam bytea_param(ByteView b);
SpiParam oid_param(Oid v);

class OwnerSpi {
 public:
  // `as_owner` false: the statements run as the current user (DDL on the caller's own
  // tables, which must be checked by PostgreSQL as the caller), still with the pinned
  // search_path. `nonatomic`: SPI in a procedure called by CALL, so that commit() works.
  explicit OwnerSpi(bool as_owner = true, bool nonatomic = false);
  ~OwnerSpi();
  OwnerSpi(const OwnerSpi&) = delete;
  OwnerSpi& operator=(const OwnerSpi&) = delete;

  // Runs a statement; throws unless SPI answers `expected_rc`. Returns SPI_processed.
  // Statements see the latest committed state (and lock rows they select FOR UPDATE).
  std::uint64_t exec(const char* sql, std::initializer_list<SpiParam> params, int expected_rc) {
    return exec(sql, std::span<const SpiParam>(params.begin(), params.size()), expected_rc);
  }
  std::uint64_t exec(const char* sql, std::span<const SpiParam> params, int expected_rc);

  // Column values of the last result (1-based column numbers). NULL reads as empty/0.
  std::string text_at(std::uint64_t row, int col) const;
  std::int32_t int4_at(std::uint64_t row, int col) const;
  std::int64_t int8_at(std::uint64_t row, int col) const;
  Bytes bytea_at(std::uint64_t row, int col) const;
  bool isnull_at(std::uint64_t row, int col) const;

  void finish();

  // In a non-atomic session: commits and starts a new transaction (search_path and
  // user as before).
  void commit();

 private:
  bool as_owner_ = true;
  bool nonatomic_ = false;
  bool connected_ = false;
  bool switched_ = false;
  int guc_level_ = 0;
  Oid saved_user_ = InvalidOid;
  int saved_sec_ = 0;
};

}  // namespace pg_envelope
