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

std::optional<KekVersion> KmsProvider::current_kek_version(std::string_view) { return std::nullopt; }

std::string KmsProvider::wrapped_kek_version(std::string_view, ByteView) const { return {}; }

bool dek_behind_kek(const KekVersion& current, std::string_view wrapped_version, std::int64_t wrapped_at_us) noexcept {
  if (!wrapped_version.empty() && !current.version.empty()) return wrapped_version != current.version;
  return current.since_us > 0 && wrapped_at_us < current.since_us;
}

namespace {

bool digits(std::string_view s, std::size_t pos, std::size_t n, int& out) noexcept {
  if (pos + n > s.size()) return false;
  out = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
std::int64_t days_from_civil(std::int64_t y, int m, int d) noexcept {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const std::int64_t yoe = y - era * 400;
  const std::int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const std::int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

}  // namespace

bool parse_rfc3339(std::string_view s, std::int64_t& unix_us) noexcept {
  int y, mo, d, h, mi, sec;
  if (!digits(s, 0, 4, y) || s.size() < 20 || s[4] != '-' || !digits(s, 5, 2, mo) || s[7] != '-' ||
      !digits(s, 8, 2, d) || (s[10] != 'T' && s[10] != 't') || !digits(s, 11, 2, h) || s[13] != ':' ||
      !digits(s, 14, 2, mi) || s[16] != ':' || !digits(s, 17, 2, sec))
    return false;
  static constexpr int kDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (mo < 1 || mo > 12 || d < 1 || d > kDays[mo - 1] || (mo == 2 && d == 29 && !leap) || h > 23 || mi > 59 ||
      sec > 60)
    return false;
  std::size_t pos = 19;
  std::int64_t micros = 0;
  if (pos < s.size() && s[pos] == '.') {
    std::size_t start = ++pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (pos - start < 6) micros = micros * 10 + (s[pos] - '0');
      ++pos;
    }
    if (pos == start) return false;
    for (std::size_t n = pos - start; n < 6; ++n) micros *= 10;
  }
  std::int64_t offset = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    int oh, om;
    if (!digits(s, pos + 1, 2, oh) || pos + 3 >= s.size() || s[pos + 3] != ':' || !digits(s, pos + 4, 2, om) ||
        oh > 23 || om > 59)
      return false;
    offset = (s[pos] == '+' ? 1 : -1) * (oh * 3600 + om * 60);
    pos += 6;
  } else {
    return false;
  }
  if (pos != s.size()) return false;
  unix_us = (days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset) * 1000000 + micros;
  return true;
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
