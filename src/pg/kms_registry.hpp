// The KMS providers of this backend: the built-in "local" one and those configured in
// envelope.kms, built on first use and rebuilt when a KMS is altered or dropped
// anywhere (the key generation moves). A provider keeps its connection and token
// caches for as long as its configuration does not change.
#pragma once

#include <memory>
#include <string_view>

#include "pg_envelope/kms.hpp"

namespace pg_envelope {

// The provider for a KMS name; Error 42704 when no such KMS is configured.
KmsProvider& kms_provider(std::string_view kms_name);

// Builds (and so validates) a provider for a configuration without registering it.
std::unique_ptr<KmsProvider> build_kms_provider(const KmsConfig& config);

}  // namespace pg_envelope
