// Argument and context checks shared by the SQL-callable functions.
#include "guard.hpp"

extern "C" {
#include "access/xact.h"
#include "access/xlog.h"
#include "utils/jsonb.h"
}

#include "sql_args.hpp"

namespace pg_envelope {

std::string text_arg(FunctionCallInfo fcinfo, int n, const char* what) {
  if (PG_ARGISNULL(n)) throw Error(sqlstate::kNullValueNotAllowed, std::string(what) + " must not be null");
  Datum d = PG_GETARG_DATUM(n);
  text* t = pg_call([d] { return DatumGetTextPP(d); });
  return std::string(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

std::string jsonb_arg(FunctionCallInfo fcinfo, int n) {
  if (PG_ARGISNULL(n)) return "{}";
  Datum d = PG_GETARG_DATUM(n);
  char* s = DatumGetCString(pg_call([d] { return DirectFunctionCall1(jsonb_out, d); }));
  std::string out(s);
  pfree(s);
  return out;
}

void require_writable(const char* what) {
  if (RecoveryInProgress())
    throw Error(sqlstate::kReadOnlySqlTransaction, std::string("cannot ") + what + " on a standby server",
                "Key and KMS changes are made on the primary; they reach this standby through replication.",
                "Run it on the primary server.");
  if (XactReadOnly)
    throw Error(sqlstate::kReadOnlySqlTransaction, std::string("cannot ") + what + " in a read-only transaction",
                "Key and KMS changes write the key tables.", "");
}

}  // namespace pg_envelope
