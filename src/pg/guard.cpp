// Implementation of the error boundary: converting C++ exceptions to ereport() and
// PostgreSQL errors to C++ exceptions.
#include "guard.hpp"

#include <cstdio>
#include <cstring>
#include <new>

namespace pg_envelope {

void throw_pg_error(MemoryContext cxt) {
  // We are in the error-recovery path of a longjmp: copy the error out of the error
  // stack and clear it, as PG_CATCH users do, then continue as a C++ exception.
  MemoryContextSwitchTo(cxt);
  ErrorData* edata = CopyErrorData();
  FlushErrorState();
  throw PgError(edata);
}

void* pg_alloc(Size size) {
  if (!AllocSizeIsValid(size)) throw Error(sqlstate::kProgramLimitExceeded, "value too large for pg_envelope",
                                           "A value may be at most 1 GB after encryption.");
  void* p = palloc_extended(size, MCXT_ALLOC_NO_OOM);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

struct varlena* pg_varlena(std::span<const std::uint8_t> bytes) {
  auto* v = static_cast<struct varlena*>(pg_alloc(VARHDRSZ + bytes.size()));
  SET_VARSIZE(v, VARHDRSZ + bytes.size());
  if (!bytes.empty()) std::memcpy(VARDATA(v), bytes.data(), bytes.size());
  return v;
}

namespace {

// Plain storage for an error crossing the boundary: no destructors may be pending
// when ereport() longjmps out of run_guarded.
struct PlainError {
  char sqlstate[6];
  char message[512];
  char detail[1024];
  char hint[512];
};

void copy_str(char* dst, std::size_t cap, const char* src) {
  std::snprintf(dst, cap, "%s", src == nullptr ? "" : src);
}

int to_sqlerrcode(const char* s) {
  if (s == nullptr || std::strlen(s) != 5) return ERRCODE_INTERNAL_ERROR;
  return MAKE_SQLSTATE(s[0], s[1], s[2], s[3], s[4]);
}

// Copies the C++ exception being handled into `err` (or its PgError into pg_error).
// Called from inside a catch (...) block only.
void capture_current_exception(PlainError& err, ErrorData*& pg_error) noexcept {
  try {
    throw;
  } catch (const PgError& e) {
    pg_error = e.data();
  } catch (const Error& e) {
    copy_str(err.sqlstate, sizeof err.sqlstate, e.sqlstate());
    copy_str(err.message, sizeof err.message, e.what());
    copy_str(err.detail, sizeof err.detail, e.detail().c_str());
    copy_str(err.hint, sizeof err.hint, e.hint().c_str());
  } catch (const std::bad_alloc&) {
    copy_str(err.sqlstate, sizeof err.sqlstate, sqlstate::kOutOfMemory);
    copy_str(err.message, sizeof err.message, "out of memory");
    err.detail[0] = err.hint[0] = '\0';
  } catch (const std::exception& e) {
    copy_str(err.sqlstate, sizeof err.sqlstate, sqlstate::kInternalError);
    std::snprintf(err.message, sizeof err.message, "pg_envelope internal error: %s", e.what());
    err.detail[0] = err.hint[0] = '\0';
  } catch (...) {
    copy_str(err.sqlstate, sizeof err.sqlstate, sqlstate::kInternalError);
    copy_str(err.message, sizeof err.message, "pg_envelope internal error: unknown exception");
    err.detail[0] = err.hint[0] = '\0';
  }
}

}  // namespace

Datum run_guarded(FunctionCallInfo fcinfo, Datum (*impl)(FunctionCallInfo)) {
  ErrorData* pg_error = nullptr;
  PlainError err;
  err.sqlstate[0] = '\0';
  try {
    return impl(fcinfo);
  } catch (...) {
    capture_current_exception(err, pg_error);
  }
  // Outside the try/catch: every C++ frame below us has unwound.
  if (pg_error != nullptr) ReThrowError(pg_error);
  // A KMS call stopped by a cancel or statement_timeout: let PostgreSQL raise its own
  // error, which says which of the two it was.
  if (std::strcmp(err.sqlstate, sqlstate::kQueryCanceled) == 0) CHECK_FOR_INTERRUPTS();
  ereport(ERROR, (errcode(to_sqlerrcode(err.sqlstate)), errmsg_internal("%s", err.message),
                  err.detail[0] ? errdetail_internal("%s", err.detail) : 0,
                  err.hint[0] ? errhint("%s", err.hint) : 0));
  pg_unreachable();
}

void run_hook_guarded(int elevel, const char* what, void (*call)(void*), void* ctx) {
  ErrorData* pg_error = nullptr;
  PlainError err;
  err.sqlstate[0] = '\0';
  try {
    call(ctx);
    return;
  } catch (...) {
    capture_current_exception(err, pg_error);
  }
  // Outside the try/catch: every C++ frame below us has unwound.
  if (pg_error != nullptr) {
    if (elevel >= ERROR) ReThrowError(pg_error);
    ereport(elevel, (errcode(pg_error->sqlerrcode), errmsg_internal("pg_envelope %s: %s", what, pg_error->message)));
    FreeErrorData(pg_error);
    return;
  }
  ereport(elevel, (errcode(to_sqlerrcode(err.sqlstate)), errmsg_internal("pg_envelope %s: %s", what, err.message),
                   err.detail[0] ? errdetail_internal("%s", err.detail) : 0,
                   err.hint[0] ? errhint("%s", err.hint) : 0));
}

}  // namespace pg_envelope
