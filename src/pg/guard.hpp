// The C++ / PostgreSQL error boundary (see ../shared/STYLE.md).
//
// PostgreSQL raises errors with longjmp; C++ unwinds with exceptions. Neither may cross
// the other's frames:
//
//  * PGENV_FUNCTION(name) defines every SQL-callable entry point. Its body runs inside
//    try/catch; a caught error is copied into plain storage and raised with ereport()
//    only after the try/catch has ended, so every destructor has run. The SQLSTATE,
//    message, detail and hint travel unchanged.
//  * pg_call(f) runs a PostgreSQL call that may ereport (palloc, detoast, SPI, catalog
//    access) from C++ code: the PostgreSQL error is caught with sigsetjmp, copied and
//    rethrown as pg_envelope::PgError. f must hold no object with a destructor.
#pragma once

#include "pg_includes.hpp"

#include <cstdint>
#include <exception>
#include <span>
#include <type_traits>

#include "pg_envelope/error.hpp"

namespace pg_envelope {

// A PostgreSQL error caught by pg_call, carried through C++ frames as an exception.
class PgError : public std::exception {
 public:
  explicit PgError(ErrorData* data) noexcept : data_(data) {}
  ErrorData* data() const noexcept { return data_; }
  const char* what() const noexcept override { return "PostgreSQL error"; }

 private:
  ErrorData* data_;  // palloc'd in the memory context current at the pg_call
};

[[noreturn]] void throw_pg_error(MemoryContext cxt);

template <typename F>
auto pg_call(F&& f) -> decltype(f()) {
  using R = decltype(f());
  MemoryContext cxt = CurrentMemoryContext;
  sigjmp_buf* volatile saved_stack = PG_exception_stack;
  ErrorContextCallback* volatile saved_context = error_context_stack;
  sigjmp_buf local;
  if (sigsetjmp(local, 0) == 0) {
    PG_exception_stack = &local;
    try {
      if constexpr (std::is_void_v<R>) {
        f();
        PG_exception_stack = saved_stack;
        error_context_stack = saved_context;
        return;
      } else {
        R result = f();
        PG_exception_stack = saved_stack;
        error_context_stack = saved_context;
        return result;
      }
    } catch (...) {
      // f threw a C++ exception (it called C++ code that allocates, say): the frame
      // `local` belongs to is about to go, so PostgreSQL must not jump to it.
      PG_exception_stack = saved_stack;
      error_context_stack = saved_context;
      throw;
    }
  }
  PG_exception_stack = saved_stack;
  error_context_stack = saved_context;
  throw_pg_error(cxt);
}

// palloc that reports exhaustion as std::bad_alloc instead of a longjmp.
void* pg_alloc(Size size);

// A palloc'd varlena (text/bytea/encrypted_* layout) holding a copy of `bytes`.
struct varlena* pg_varlena(std::span<const std::uint8_t> bytes);

// Runs impl with the boundary described above. Never returns on error.
Datum run_guarded(FunctionCallInfo fcinfo, Datum (*impl)(FunctionCallInfo));

// The same for a hook or callback body: `call(ctx)` runs inside try/catch; an error
// is reported with ereport(elevel), naming `what`, after the try/catch has ended.
void run_hook_guarded(int elevel, const char* what, void (*call)(void*), void* ctx);

template <typename F>
void guarded_hook(int elevel, const char* what, F&& f) {
  using Fn = std::remove_reference_t<F>;
  run_hook_guarded(elevel, what, [](void* p) { (*static_cast<Fn*>(p))(); }, static_cast<void*>(&f));
}

}  // namespace pg_envelope

#define PGENV_FUNCTION(name)                                                         \
  static Datum name##_impl([[maybe_unused]] FunctionCallInfo fcinfo);                \
  extern "C" {                                                                       \
  PG_FUNCTION_INFO_V1(name);                                                         \
  }                                                                                  \
  extern "C" Datum name(PG_FUNCTION_ARGS) { return pg_envelope::run_guarded(fcinfo, name##_impl); } \
  static Datum name##_impl([[maybe_unused]] FunctionCallInfo fcinfo)
