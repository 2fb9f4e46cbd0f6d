// AWS credentials for the aws-kms provider: what a credential is, the static sources
// (the server's environment and the shared credentials file) and the pure parts of
// the temporary ones (the JSON of the ECS/EKS container endpoint and of EC2's
// instance-metadata service, expiry arithmetic). Pure C++.
//
// The sources themselves and the chain that tries them in order live in
// aws_credential_chain.hpp; STS (AssumeRole, AssumeRoleWithWebIdentity) in aws_sts.hpp.
//
// Every value read (access key id, secret access key, session token) lives in a
// SecretString; files are read through read_file_secret() and parsed in place, so no
// line of them is ever copied into a std::string.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "pg_envelope/http.hpp"
#include "pg_envelope/secrets.hpp"

namespace pg_envelope::remote::aws {

struct Credentials {
  SecretString access_key;
  SecretString secret_key;
  SecretString session_token;  // empty: none
  // When they stop working (Unix microseconds); 0: not known to expire (static keys,
  // which are read again on every call instead of being cached).
  std::int64_t expires_at_us = 0;
  // Where they came from, for error details: never a secret ("the server's
  // environment", "role \"arn:...\" assumed through STS at https://...").
  std::string source;
};

using GetEnv = std::function<const char*(const char*)>;

// The keys of section [profile] of a shared credentials file's text: lines split at
// "\n", surrounding whitespace ignored, "#" and ";" lines are comments, "[name]"
// opens a section (a name may repeat: its keys add up, a later value wins),
// "key = value" (split at the first "="). Keys read: aws_access_key_id,
// aws_secret_access_key, aws_session_token; the rest is ignored. Never fails.
Credentials parse_credentials_file(std::string_view text, std::string_view profile);

// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (both non-empty, with AWS_SESSION_TOKEN
// if set) from the environment; nullopt when either is missing.
std::optional<Credentials> environment_credentials(const GetEnv& getenv);

// The shared credentials file: `file_option`, else AWS_SHARED_CREDENTIALS_FILE, else
// $HOME/.aws/credentials; profile `profile_option`, else AWS_PROFILE, else "default".
// nullopt when no file was named and the default one does not exist, or when the
// profile has not both keys. Throws Error 28000 when the file is accessible to other
// users or too large, and when a file named by the option or AWS_SHARED_CREDENTIALS_FILE
// cannot be read or its profile has not both keys (a configured source that fails is
// an error, never a reason to try the next one).
std::optional<Credentials> shared_file_credentials(const std::string& kms, const std::string& file_option,
                                                   const std::string& profile_option, const GetEnv& getenv);

// Whether credentials can go into a request: an access key id of 16 to 128 letters
// and digits, a secret access key and a session token (if any) of visible ASCII
// (no spaces, quotes or control characters), at most 128 and 16384 characters.
bool credentials_well_formed(const Credentials& c) noexcept;

// The credentials of a container endpoint (ECS task role, EKS Pod Identity) or of
// EC2's instance-metadata service: a JSON object with AccessKeyId, SecretAccessKey,
// Token and Expiration (RFC 3339; required); a "Code" other than "Success" (IMDS) is
// a refusal. Any other status than 2xx: 58000 for 429 and 5xx, else 28000
// "HTTP <status>"; a malformed answer: 28000 "malformed response". `op` names the
// request ("container credentials request"), `where` the service for the detail
// ("The container credentials endpoint at http://...").
Credentials parse_credentials_json(const HttpResponse& response, const std::string& kms, const std::string& op,
                                   const std::string& where);

// When temporary credentials fetched at `fetched_at_us` and expiring at
// `expires_at_us` are fetched again: five minutes before they expire, or halfway
// through their remaining lifetime when that is shorter; `fetched_at_us` (use them
// for this one call) when they are already expired or do not expire.
std::int64_t credential_refresh_at_us(std::int64_t expires_at_us, std::int64_t fetched_at_us) noexcept;

// The current time, Unix microseconds.
std::int64_t unix_now_us() noexcept;

}  // namespace pg_envelope::remote::aws
