// Wait events for pg_stat_activity while pg_envelope waits: "Extension" before
// PostgreSQL 17; from 17 on, the custom events "EnvelopeKmsCall" (a KMS call in
// flight) and "EnvelopeDekWait" (waiting for another backend's unwrap of the same DEK).
#pragma once

#include <cstdint>

namespace pg_envelope {

std::uint32_t kms_call_wait_event();
std::uint32_t dek_wait_event();

// Reports the KMS call wait event for its lifetime (around KMS calls, not SPI).
class KmsWait {
 public:
  KmsWait();
  ~KmsWait();
  KmsWait(const KmsWait&) = delete;
  KmsWait& operator=(const KmsWait&) = delete;
};

}  // namespace pg_envelope
