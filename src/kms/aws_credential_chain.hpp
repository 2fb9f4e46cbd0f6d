// The AWS credential provider chain of the aws-kms provider, as the AWS SDKs define
// it, plus role assumption on top. Pure C++.
//
// Sources, tried in this order; the first that is configured answers (a configured
// source that fails is an error, never a reason to try the next one):
//   1. environment      AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN)
//   2. web identity     AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN (+ AWS_ROLE_SESSION_NAME):
//                       STS AssumeRoleWithWebIdentity (EKS IRSA)
//   3. shared file      option credentials_file / AWS_SHARED_CREDENTIALS_FILE /
//                       ~/.aws/credentials, profile option / AWS_PROFILE / "default"
//   4. container        AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (ECS task role, against
//                       169.254.170.2 or the option container_endpoint) or
//                       AWS_CONTAINER_CREDENTIALS_FULL_URI (EKS Pod Identity: https, loopback
//                       or the link-local ECS/EKS addresses only), with the Authorization
//                       header from AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE or
//                       AWS_CONTAINER_AUTHORIZATION_TOKEN
//   5. EC2 instance     IMDSv2 only (never IMDSv1): PUT /latest/api/token, then
//      metadata         GET /latest/meta-data/iam/security-credentials/[<role>]; endpoint
//                       option ec2_metadata_endpoint / AWS_EC2_METADATA_SERVICE_ENDPOINT /
//                       http://169.254.169.254; off with AWS_EC2_METADATA_DISABLED=true.
// With the option role_arn, the credentials found assume that role (STS AssumeRole,
// SigV4-signed). Every source answers with the credentials and their expiry behind one
// interface (CredentialSource), so a later change can share them across backends.
// Temporary credentials are cached until shortly before they expire
// (credential_refresh_at_us): with a server-wide credential store in the KmsContext
// (pg_envelope/credential_store.hpp), once for the whole server (the chain's
// credentials and the role's, each under its own identity), else per provider object,
// i.e. per backend. Static ones are read again on every call, so a rotated file or
// environment applies at once, and never shared.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "aws_credentials.hpp"
#include "aws_sts.hpp"
#include "pg_envelope/kms.hpp"

namespace pg_envelope::remote::aws {

struct ChainConfig {
  std::string kms;
  std::string region;
  std::string credentials_file;       // option; empty: AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials
  std::string profile;                // option; empty: AWS_PROFILE or "default"
  std::string sts_endpoint;           // STS base URL (default_sts_endpoint(region) unless overridden)
  std::string ec2_metadata_endpoint;  // option; empty: AWS_EC2_METADATA_SERVICE_ENDPOINT or http://169.254.169.254
  std::string container_endpoint;     // option; empty: http://169.254.170.2
  RoleConfig role;
};

// One source of credentials.
class CredentialSource {
 public:
  virtual ~CredentialSource() = default;
  // Its name in messages ("environment", "web identity", ...).
  virtual const char* name() const noexcept = 0;
  // The credentials, or nullopt when this source is not configured here; then `skipped`
  // says why, for the "no AWS credentials" detail. Throws Error when the source is
  // configured and fails.
  virtual std::optional<Credentials> fetch(const KmsContext& ctx, std::string& skipped) = 0;
};

// The five sources above, in their order.
std::vector<std::unique_ptr<CredentialSource>> default_sources(const ChainConfig& config);

// Whether a container credentials URL may be used (AWS_CONTAINER_CREDENTIALS_FULL_URI):
// https, or http to a loopback address or to 169.254.170.2 (ECS), 169.254.170.23 or
// [fd00:ec2::23] (EKS Pod Identity), as the SDKs allow.
bool container_url_allowed(std::string_view url);

// A copy of credentials (SecretString does not copy implicitly).
Credentials copy_credentials(const Credentials& c);

class CredentialProvider {
 public:
  explicit CredentialProvider(ChainConfig config);
  // Tests: other sources and clock (Unix microseconds).
  CredentialProvider(ChainConfig config, std::vector<std::unique_ptr<CredentialSource>> sources,
                     std::function<std::int64_t()> now);

  // The credentials to sign with: cached ones until their refresh time, else the
  // chain's (and the role's). Throws Error 28000 "no AWS credentials" when no source is
  // configured, and the errors of the sources and of STS.
  Credentials get(const KmsContext& ctx);

  // After the KMS refused the credentials: forgets cached ones. True when that may
  // help (there were cached temporary credentials, worth one more attempt). The
  // second also drops them from the context's credential store, if they are still
  // the ones stored there.
  bool invalidate() noexcept;
  bool invalidate(const KmsContext& ctx);

  // The identities under which the chain's and the role's credentials are shared:
  // what decides where they come from (never a secret).
  std::string base_identity(const KmsContext& ctx) const;
  std::string role_identity(const KmsContext& ctx) const;

  const ChainConfig& config() const noexcept { return config_; }

 private:
  Credentials base(const KmsContext& ctx);
  Credentials chain(const KmsContext& ctx);
  // Through the context's store: `fetch` runs when the stored value needs a refresh;
  // `cache`/`refresh_at`/`value` keep this backend's copy.
  Credentials shared(const KmsContext& ctx, const std::string& identity, const std::function<Credentials()>& fetch,
                     Credentials& cache, std::int64_t& refresh_at, SecureBytes& value);

  ChainConfig config_;
  std::vector<std::unique_ptr<CredentialSource>> sources_;
  std::function<std::int64_t()> now_;
  Credentials base_, role_;  // cached temporary credentials (empty access_key: none)
  std::int64_t base_refresh_at_ = 0, role_refresh_at_ = 0;
  // Shared mode: the stored values last used (for invalidate), and whether the chain
  // answered with static credentials (then this backend no longer asks the store).
  SecureBytes base_value_, role_value_;
  bool base_static_ = false;
};

// The encoding of credentials in the credential store, and back (false: malformed).
SecureBytes encode_credentials(const Credentials& c);
bool decode_credentials(ByteView bytes, Credentials& out);

}  // namespace pg_envelope::remote::aws
