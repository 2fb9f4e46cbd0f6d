// The KMS-provider interface's default operations, and the table of remote providers
// that make_kms_provider() builds from: their names, what they talk to, and their
// factories. Everything in C++ that lists providers derives from this table.
#include <algorithm>
#include <array>
#include <iterator>

#include "pg_envelope/crypto.hpp"
#include "pg_envelope/error.hpp"
#include "pg_envelope/kms.hpp"

namespace pg_envelope {

GeneratedDek KmsProvider::generate_data_key(std::string_view kek, const DekBinding& binding) {
  GeneratedDek out;
  out.plaintext = SecureBytes(kAes256KeySize);
  random_bytes(out.plaintext.span());
  out.wrapped = wrap(kek, binding, out.plaintext.view());
  return out;
}

Bytes KmsProvider::rewrap(std::string_view old_kek, std::string_view new_kek, const DekBinding& binding,
                          ByteView wrapped) {
  SecureBytes dek = unwrap(old_kek, binding, wrapped);
  return wrap(new_kek, binding, dek.view());
}

// The factories, one in each provider's file.
std::unique_ptr<KmsProvider> make_vault_transit_kms(const KmsConfig& cfg, const KmsContext& ctx);
std::unique_ptr<KmsProvider> make_aws_kms(const KmsConfig& cfg, const KmsContext& ctx);
std::unique_ptr<KmsProvider> make_gcp_kms(const KmsConfig& cfg, const KmsContext& ctx);
std::unique_ptr<KmsProvider> make_azure_keyvault_kms(const KmsConfig& cfg, const KmsContext& ctx);

namespace {

struct RemoteProvider {
  std::string_view name;         // envelope.kms.provider
  std::string_view description;  // what it talks to, for the list of providers; empty when the name says it
  std::unique_ptr<KmsProvider> (*make)(const KmsConfig&, const KmsContext&);
};

// In the order of docs/kms.md. extension/*.sql's CHECK constraint on
// envelope.kms.provider names the same providers (and "local"): change both.
constexpr RemoteProvider kRemoteProviders[] = {
    {"vault-transit", "HashiCorp Vault and OpenBao", make_vault_transit_kms},
    {"aws-kms", "", make_aws_kms},
    {"gcp-kms", "Google Cloud KMS", make_gcp_kms},
    {"azure-keyvault", "Azure Key Vault and Managed HSM", make_azure_keyvault_kms},
};

constexpr auto kRemoteProviderNames = [] {
  std::array<std::string_view, std::size(kRemoteProviders)> names{};
  for (std::size_t i = 0; i < names.size(); ++i) names[i] = kRemoteProviders[i].name;
  return names;
}();

const RemoteProvider* find_remote_provider(std::string_view name) noexcept {
  auto it = std::find_if(std::begin(kRemoteProviders), std::end(kRemoteProviders),
                         [&](const RemoteProvider& p) { return p.name == name; });
  return it == std::end(kRemoteProviders) ? nullptr : &*it;
}

// "Available providers: "vault-transit" (HashiCorp Vault and OpenBao), "aws-kms", ..."
std::string available_providers() {
  std::string text = "Available providers: ";
  for (const RemoteProvider& p : kRemoteProviders) {
    if (&p != std::begin(kRemoteProviders)) text += ", ";
    text += "\"" + std::string(p.name) + "\"";
    if (!p.description.empty()) text += " (" + std::string(p.description) + ")";
  }
  return text + ".";
}

}  // namespace

std::span<const std::string_view> remote_provider_names() noexcept { return kRemoteProviderNames; }

bool is_known_provider(std::string_view provider) {
  return provider == "local" || find_remote_provider(provider) != nullptr;
}

std::unique_ptr<KmsProvider> make_kms_provider(const KmsConfig& config, const KmsContext& context) {
  if (const RemoteProvider* p = find_remote_provider(config.provider)) return p->make(config, context);
  if (config.provider == "local")
    throw Error(sqlstate::kInvalidParameterValue, "there is only one local KMS, named \"local\"",
                "The local KMS uses the server's master key; it takes no options.");
  // The name given is not repeated: it names nothing (see src/pg/key_errors.hpp).
  throw Error(sqlstate::kInvalidParameterValue, "unknown KMS provider", available_providers());
}

}  // namespace pg_envelope
