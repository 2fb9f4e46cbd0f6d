// Per-backend registry of KMS providers and the PostgreSQL side of their HTTP calls:
// timeouts from GUCs, interrupts (statement_timeout, pg_cancel_backend, shutdown)
// seen by libcurl's progress callback, and the server's environment for credentials.
#include "guard.hpp"

extern "C" {
#include "pgstat.h"
#include "utils/guc.h"
#include "utils/wait_event.h"
}

#include <cstdlib>
#include <map>

#include "key_catalog.hpp"
#include "key_errors.hpp"
#include "kms_registry.hpp"
#include "shared_cache.hpp"
#include "shared_state.hpp"

namespace pg_envelope {

namespace {

int connect_timeout_ms = 5000;
int request_timeout_ms = 10000;
int retry_budget_ms = 30000;
char* ca_file = nullptr;

struct Entry {
  std::uint64_t generation;  // the key generation at which `config` was last confirmed
  KmsConfig config;
  std::unique_ptr<KmsProvider> provider;  // keeps its connection and token caches
};

std::map<std::string, Entry, std::less<>>& registry() {
  static std::map<std::string, Entry, std::less<>> r;
  return r;
}

KmsContext current_context() {
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

}  // namespace

std::unique_ptr<KmsProvider> build_kms_provider(const KmsConfig& config) {
  return make_kms_provider(config, current_context());
}

KmsProvider& kms_provider(std::string_view kms_name) {
  if (kms_name == "local") return local_kms();
  std::uint64_t g = key_generation();
  auto& r = registry();
  auto it = r.find(kms_name);
  if (it != r.end() && it->second.generation == g) return *it->second.provider;
  // Something changed somewhere (a key or a KMS): re-read this KMS's row, and rebuild
  // the provider only if its configuration changed, so its token cache survives.
  std::optional<KmsConfig> cfg = key_catalog::kms(kms_name);
  if (!cfg) {
    if (it != r.end()) r.erase(it);
    throw_no_such_kms();
  }
  if (it != r.end() && it->second.config.provider == cfg->provider &&
      it->second.config.options_json == cfg->options_json) {
    it->second.generation = g;
    return *it->second.provider;
  }
  auto provider = build_kms_provider(*cfg);
  auto& slot = r[std::string(kms_name)];
  slot.generation = g;
  slot.config = std::move(*cfg);
  slot.provider = std::move(provider);
  return *slot.provider;
}

long kms_wait_budget_ms() { return static_cast<long>(retry_budget_ms) + 1000; }

void record_kms_call(bool ok, bool unwrap, std::chrono::steady_clock::time_point start) {
  auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start).count();
  shared_cache::record_kms_call(ok, unwrap, static_cast<std::int64_t>(micros));
}

namespace {

std::uint32_t extension_wait_event([[maybe_unused]] const char* name, [[maybe_unused]] std::uint32_t& cached) {
#if PG_VERSION_NUM >= 170000
  if (cached == 0) cached = pg_call([name] { return WaitEventExtensionNew(name); });
  return cached;
#else
  return PG_WAIT_EXTENSION;
#endif
}

std::uint32_t kms_call_event = 0;
std::uint32_t dek_wait_event_id = 0;

}  // namespace

std::uint32_t kms_call_wait_event() { return extension_wait_event("EnvelopeKmsCall", kms_call_event); }
std::uint32_t dek_wait_event() { return extension_wait_event("EnvelopeDekWait", dek_wait_event_id); }

KmsWait::KmsWait() { pgstat_report_wait_start(kms_call_wait_event()); }
KmsWait::~KmsWait() { pgstat_report_wait_end(); }

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
