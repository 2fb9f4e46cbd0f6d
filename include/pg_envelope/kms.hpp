// The KMS-provider interface: how a DEK is wrapped by, and unwrapped from, a KEK
// that lives in a key management service. The built-in provider is "local" (a
// master key held in the server's private memory); cloud providers (AWS KMS, Vault
// Transit, GCP KMS, Azure Key Vault) implement the same interface.
//
// Every operation is bound to a DekBinding: a wrapped DEK only unwraps for the key
// name, key id and version it was created for, so wrapped DEKs cannot be swapped
// between keys or versions.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "pg_envelope/credential_store.hpp"
#include "pg_envelope/http.hpp"
#include "pg_envelope/secure_bytes.hpp"

namespace pg_envelope {

struct DekBinding {
  std::string key_name;
  std::uint32_t key_id = 0;
  std::uint32_t version = 0;
};

struct GeneratedDek {
  SecureBytes plaintext;  // 32 bytes
  Bytes wrapped;
};

// A KEK's current version, as the KMS reports it.
struct KekVersion {
  std::string version;          // the KMS's name for it (Vault "3", GCP "3", Azure's 32 hex digits,
                                // AWS: 1 + the number of rotations of the key's material)
  std::int64_t since_us = 0;  // when it was created (Unix microseconds); 0: no older version exists
};

class KmsProvider {
 public:
  virtual ~KmsProvider() = default;

  // The KMS name as stored in envelope.key.kms ("local" for the built-in one).
  virtual const std::string& kms_name() const = 0;

  // The KEK to use when create_key() is given none.
  virtual std::string default_kek() const = 0;

  // Checks a KEK reference before a key is created (name syntax, existence).
  virtual void validate_kek(std::string_view kek) const = 0;

  virtual Bytes wrap(std::string_view kek, const DekBinding& binding, ByteView dek) = 0;
  virtual SecureBytes unwrap(std::string_view kek, const DekBinding& binding, ByteView wrapped) = 0;

  // A fresh 256-bit DEK and its wrapped form. The default draws the DEK from the
  // local CSPRNG and calls wrap(); providers with a GenerateDataKey call override it.
  virtual GeneratedDek generate_data_key(std::string_view kek, const DekBinding& binding);

  // Re-wraps a DEK under new_kek. The default unwraps and wraps locally; providers
  // with a server-side re-encrypt override it so the DEK never leaves the KMS.
  virtual Bytes rewrap(std::string_view old_kek, std::string_view new_kek, const DekBinding& binding,
                       ByteView wrapped);

  // Asks the KMS for the KEK's current version (one or two calls). nullopt: the
  // provider has no KEK versions (the local master key).
  virtual std::optional<KekVersion> current_kek_version(std::string_view kek);

  // The KEK version a wrapped DEK was wrapped under, when its wrapped form names it
  // (Vault's "vault:vN:", Azure's kid); empty when it does not (AWS and GCP
  // ciphertexts are opaque: callers compare the time of the wrap with since_us).
  virtual std::string wrapped_kek_version(std::string_view kek, ByteView wrapped) const;
};

// Whether a DEK wrapped under `wrapped_version` (empty: unknown) at `wrapped_at_us`
// is behind the KEK's current version: by version where the wrapped form names one,
// else by time (wrapped before the current version was created).
bool dek_behind_kek(const KekVersion& current, std::string_view wrapped_version, std::int64_t wrapped_at_us) noexcept;

// Parses an RFC 3339 timestamp ("2026-12-03T10:00:00.123456789Z", a fraction and a
// numeric offset allowed) into Unix microseconds (digits past them dropped); false
// when malformed.
bool parse_rfc3339(std::string_view text, std::int64_t& unix_us) noexcept;

// Where the local master key came from and whether it loaded; the reason is kept so
// every later call can report it (the key is read once, in the postmaster).
struct MasterKeyStatus {
  enum class State { kNotLoaded, kNotConfigured, kLoaded, kFailed } state = State::kNotLoaded;
  std::string sqlstate;  // empty: 55000
  std::string message;  // why it failed; never contains key material
  std::string source;   // the setting it was read from; empty when the settings conflict
};

// Parses 64 hex digits, optionally surrounded by whitespace, into 32 bytes.
// Throws Error (22023) without echoing the input on any other content.
SecureBytes parse_master_key_hex(std::string_view text);

// Reads the master key from a file (refusing group/world-accessible files) or from a
// command's standard output. Throw Error on failure. The command runs through
// /bin/sh -c in a process group of its own; if it has not finished (exited and closed
// its output) within `timeout_ms`, that group is killed and Error F0000 thrown.
SecureBytes read_master_key_file(const std::string& path);
SecureBytes read_master_key_command(const std::string& command, int timeout_ms = 30000);

// The process-wide master key: installed once (in the postmaster when preloaded) and
// inherited by every backend. Never exposed to SQL.
void install_master_key(SecureBytes key);
void record_master_key_failure(MasterKeyStatus status);

// The built-in local provider; throws Error 55000 when the master key is unavailable.
KmsProvider& local_kms();

// A configured KMS (a row of envelope.kms). Options never hold secrets: credentials
// come from the server's environment or from files named in the options.
struct KmsConfig {
  std::string name;
  std::string provider;  // "local" or one of remote_provider_names()
  std::string options_json;
};

// What providers need from their host: HTTP settings (timeouts, CA file, the
// interrupt check), the server's environment and, when the host has one, the
// server-wide credential store (null: credentials are cached per provider object).
struct KmsContext {
  HttpOptions http;
  std::function<const char*(const char*)> getenv;
  std::shared_ptr<CredentialStore> credentials;
};

// Builds the provider for a configuration. Validates the options strictly (unknown
// or secret-looking options, wrong types, non-https addresses): Error 22023. For
// "local" or an unknown provider, Error 22023 (the latter's detail lists
// remote_provider_names()).
std::unique_ptr<KmsProvider> make_kms_provider(const KmsConfig& config, const KmsContext& context);

// The remote providers make_kms_provider builds, in the order of docs/kms.md:
// "vault-transit", "aws-kms", "gcp-kms", "azure-keyvault". With "local", these are
// the values the CHECK constraint of envelope.kms.provider allows (extension/*.sql).
std::span<const std::string_view> remote_provider_names() noexcept;

// True for "local" and remote_provider_names().
bool is_known_provider(std::string_view provider);

// The local provider over an explicit master key (unit tests, tools).
std::unique_ptr<KmsProvider> make_local_kms(ByteView master_key);

}  // namespace pg_envelope
