// The KMS providers of this backend: the built-in "local" one and those configured in
// envelope.kms, built on first use and rebuilt when a KMS is altered or dropped
// anywhere (the shared key generation moves).
#pragma once

#include <string_view>

#include "pg_envelope/kms.hpp"

namespace pg_envelope {

// The provider for a KMS name; Error 42704 when no such KMS is configured.
KmsProvider& kms_provider(std::string_view kms_name);

// Builds (and so validates) a provider for a configuration without registering it.
std::unique_ptr<KmsProvider> build_kms_provider(const KmsConfig& config);

// Reports the wait event "Extension" while a KMS call is in flight (pg_stat_activity).
class KmsWait {
 public:
  KmsWait();
  ~KmsWait();
  KmsWait(const KmsWait&) = delete;
  KmsWait& operator=(const KmsWait&) = delete;
};

// How long a backend waits for another backend's KMS call for the same DEK: the
// whole retry budget of that call plus a margin.
long kms_wait_budget_ms();

// GUCs envelope.kms_* (timeouts, retry budget, CA file).
void define_kms_gucs();

}  // namespace pg_envelope
