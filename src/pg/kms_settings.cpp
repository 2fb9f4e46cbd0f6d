// KMS settings (see kms_settings.hpp).
#include "guard.hpp"

extern "C" {
#include "utils/guc.h"
}

#include <cstdlib>

#include "kms_settings.hpp"

namespace pg_envelope {

namespace {

int connect_timeout_ms = 5000;
int request_timeout_ms = 10000;
int retry_budget_ms = 30000;
char* ca_file = nullptr;

}  // namespace

KmsContext kms_context() {
  KmsContext ctx;
  // Settings are read at every call, not when the provider was built.
  ctx.http.refresh = [](HttpOptions& o) {
    o.connect_timeout_ms = connect_timeout_ms;
    o.attempt_timeout_ms = request_timeout_ms;
    o.total_budget_ms = retry_budget_ms;
    if (!o.ca_file_fixed) o.ca_file = ca_file ? ca_file : "";
  };
  // Only reads the flags the signal handlers set; never longjmps.
  ctx.http.interrupted = [] { return QueryCancelPending || ProcDiePending; };
  ctx.getenv = [](const char* n) -> const char* { return std::getenv(n); };
  return ctx;
}

long kms_wait_budget_ms() { return static_cast<long>(retry_budget_ms) + 1000; }

void define_kms_gucs() {
  DefineCustomIntVariable("envelope.kms_connect_timeout", "Connect timeout of KMS requests.", nullptr,
                          &connect_timeout_ms, 5000, 100, 600000, PGC_SUSET, GUC_UNIT_MS, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("envelope.kms_request_timeout", "Timeout of one KMS request attempt.", nullptr,
                          &request_timeout_ms, 10000, 100, 600000, PGC_SUSET, GUC_UNIT_MS, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("envelope.kms_retry_budget",
                          "Total time for all attempts of one KMS operation, retries and backoff included.", nullptr,
                          &retry_budget_ms, 30000, 100, 3600000, PGC_SUSET, GUC_UNIT_MS, nullptr, nullptr, nullptr);
  DefineCustomStringVariable("envelope.kms_ca_file", "CA bundle used to verify KMS certificates.",
                             "Empty: the system's CA store. A KMS's \"ca_file\" option overrides it.", &ca_file, "",
                             PGC_SIGHUP, GUC_SUPERUSER_ONLY, nullptr, nullptr, nullptr);
}

}  // namespace pg_envelope
