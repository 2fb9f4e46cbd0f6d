// Default implementations of the KMS-provider interface and the provider registry.
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

namespace {

std::unique_ptr<KmsProvider>& local_slot() {
  static std::unique_ptr<KmsProvider> provider;
  return provider;
}

MasterKeyStatus& status_slot() {
  static MasterKeyStatus status;
  return status;
}

}  // namespace

void install_master_key(SecureBytes key) {
  local_slot() = make_local_kms(key.view());
  MasterKeyStatus& s = status_slot();
  s.state = MasterKeyStatus::State::kLoaded;
  s.sqlstate.clear();
  s.message.clear();
}

void record_master_key_failure(MasterKeyStatus status) {
  local_slot().reset();
  status_slot() = std::move(status);
}

const MasterKeyStatus& master_key_status() { return status_slot(); }

KmsProvider& local_kms() {
  if (auto& p = local_slot()) return *p;

  const MasterKeyStatus& s = status_slot();
  switch (s.state) {
    case MasterKeyStatus::State::kNotLoaded:
      throw Error(sqlstate::kObjectNotInPrerequisiteState,
                  "pg_envelope must be loaded via \"shared_preload_libraries\"",
                  "The local KMS master key is read once, when the server starts.",
                  "Add pg_envelope to shared_preload_libraries in postgresql.conf and restart the server.");
    case MasterKeyStatus::State::kNotConfigured:
      throw Error(sqlstate::kObjectNotInPrerequisiteState, "the local KMS has no master key",
                  "Neither envelope.master_key_file nor envelope.master_key_command is set.",
                  "Generate a key with \"openssl rand -hex 32\", store it in a file readable only by the "
                  "server's user, set envelope.master_key_file to its path and restart the server.");
    default:
      throw Error(s.sqlstate.empty() ? sqlstate::kObjectNotInPrerequisiteState : s.sqlstate.c_str(),
                  "the local KMS master key could not be loaded" + (s.source.empty() ? "" : " from " + s.source),
                  s.message + " The key is read once, when the server starts.",
                  s.source.empty() ? "Correct the master key settings and restart the server."
                                   : "Correct " + s.source + " and restart the server.");
  }
}

}  // namespace pg_envelope

namespace pg_envelope {

std::unique_ptr<KmsProvider> make_vault_transit_kms(const KmsConfig& cfg, const KmsContext& ctx);
std::unique_ptr<KmsProvider> make_aws_kms(const KmsConfig& cfg, const KmsContext& ctx);
std::unique_ptr<KmsProvider> make_gcp_kms(const KmsConfig& cfg, const KmsContext& ctx);
std::unique_ptr<KmsProvider> make_azure_keyvault_kms(const KmsConfig& cfg, const KmsContext& ctx);

bool is_known_provider(std::string_view provider) {
  return provider == "local" || provider == "vault-transit" || provider == "aws-kms" || provider == "gcp-kms" ||
         provider == "azure-keyvault";
}

std::unique_ptr<KmsProvider> make_kms_provider(const KmsConfig& config, const KmsContext& context) {
  if (config.provider == "vault-transit") return make_vault_transit_kms(config, context);
  if (config.provider == "aws-kms") return make_aws_kms(config, context);
  if (config.provider == "gcp-kms") return make_gcp_kms(config, context);
  if (config.provider == "azure-keyvault") return make_azure_keyvault_kms(config, context);
  if (config.provider == "local")
    throw Error(sqlstate::kInvalidParameterValue, "there is only one local KMS, named \"local\"",
                "The local KMS uses the server's master key; it takes no options.");
  // The name given is not repeated: it names nothing (see src/pg/key_errors.hpp).
  throw Error(sqlstate::kInvalidParameterValue, "unknown KMS provider",
              "Available providers: \"vault-transit\" (HashiCorp Vault and OpenBao), \"aws-kms\", \"gcp-kms\" "
              "(Google Cloud KMS), \"azure-keyvault\" (Azure Key Vault and Managed HSM).");
}

}  // namespace pg_envelope
