// AWS credentials for the aws-kms provider: the server's environment, else the
// shared credentials file. Pure C++.
//
// Every value read (access key id, secret access key, session token) lives in a
// SecretString; the file is read through read_file_secret() and parsed in place, so
// no line of it is ever copied into a std::string.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "pg_envelope/secrets.hpp"

namespace pg_envelope::remote::aws {

struct Credentials {
  SecretString access_key;
  SecretString secret_key;
  SecretString session_token;  // empty: none
};

// The keys of section [profile] of a shared credentials file's text: lines split at
// "\n", surrounding whitespace ignored, "#" and ";" lines are comments, "[name]"
// opens a section (a name may repeat: its keys add up, a later value wins),
// "key = value" (split at the first "="). Keys read: aws_access_key_id,
// aws_secret_access_key, aws_session_token; the rest is ignored. Never fails.
Credentials parse_credentials_file(std::string_view text, std::string_view profile);

// The credentials to sign with, read on every call: AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY (both non-empty, with AWS_SESSION_TOKEN if set) from the
// environment, else the file named by `file_option`, AWS_SHARED_CREDENTIALS_FILE or
// $HOME/.aws/credentials, profile `profile_option`, AWS_PROFILE or "default".
// Throws Error 28000 when the file is accessible to other users or too large, or
// when neither source has both keys.
Credentials load_credentials(const std::string& kms, const std::string& file_option,
                             const std::string& profile_option,
                             const std::function<const char*(const char*)>& getenv);

}  // namespace pg_envelope::remote::aws
