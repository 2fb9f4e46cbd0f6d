// Wait events (see wait_events.hpp).
#include "guard.hpp"

extern "C" {
#include "pgstat.h"
#include "utils/wait_event.h"
}

#include "wait_events.hpp"

namespace pg_envelope {

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

}  // namespace pg_envelope
