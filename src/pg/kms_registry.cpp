// Per-backend registry of KMS providers (see kms_registry.hpp).
#include "guard.hpp"

#include <map>

#include "key_catalog.hpp"
#include "key_errors.hpp"
#include "key_generation.hpp"
#include "kms_registry.hpp"
#include "shared_credentials.hpp"
#include "kms_settings.hpp"

namespace pg_envelope {

namespace {

struct Entry {
  std::uint64_t generation;  // the key generation at which `config` was last confirmed
  KmsConfig config;
  std::unique_ptr<KmsProvider> provider;  // keeps its connection and token caches
};

std::map<std::string, Entry, std::less<>>& registry() {
  static std::map<std::string, Entry, std::less<>> r;
  return r;
}

}  // namespace

std::unique_ptr<KmsProvider> build_kms_provider(const KmsConfig& config) {
  KmsContext ctx = kms_context();
  // Temporary credentials and login tokens: once for the whole server (null when the
  // library was not preloaded: each backend's providers keep their own).
  ctx.credentials = shared_credentials::store();
  return make_kms_provider(config, ctx);
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

}  // namespace pg_envelope
