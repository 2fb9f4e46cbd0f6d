// The pure half of each remote provider: how it judges an HTTP response for a retry,
// which Error a failed response means, and what a successful one holds. No network
// and no state: the providers call these after http_call(), and the unit tests
// (test/unit/kms_responses_test.cpp) and fuzz harnesses (test/fuzz/fuzz_kms_*.cpp)
// call them directly. Pure C++.
//
// Every failure is thrown as pg_envelope::Error through remote::fail(), so the
// SQLSTATE of each kind is the same for all providers (docs/kms.md, "Errors"):
// authentication 28000, authorization 42501, not found 42704, disabled 55000,
// undecryptable 22000, other refusals and malformed responses 22023, unavailable
// 58000. A response's own error type decides first; the HTTP status only when the
// type says nothing more specific.
#pragma once

#include <string>
#include <string_view>

#include "remote_kms.hpp"
#include "url.hpp"

namespace pg_envelope::remote {

// ---------------------------------------------------------------- Vault Transit

namespace vault {

// What an error names besides the outcome.
struct Site {
  std::string kms;
  std::string op;  // "encrypt", "decrypt", "rewrap"
  std::string kek;
  std::string address;
  std::string mount;
};

// Success for 2xx; retry 429, 500, 502, 503, 504; otherwise a failure.
Verdict judge(const HttpResponse& response);

// The body of a finished call (transport failures included): the parsed body for a
// 2xx (whatever JSON it holds), else the Error of its status and "errors" text
// (the first message, made safe by vault::error_text() of kms_messages.hpp):
// 401, or 403 whose errors say "invalid token" (Vault's answer to a bad, expired or
// revoked token) → 28000; any other 403 → 42501; 429, 5xx → 58000; "not found" →
// 42704; "authentication failed", "invalid ciphertext", "unable to decrypt" → 22000;
// "disabled", "min_decryption_version", "disallowed by policy", "archived" → 55000;
// else 22023.
json result(const HttpResult& r, const Site& site);

// "data"."ciphertext" of an encrypt or rewrap response: a "vault:v..." string.
Bytes ciphertext(const json& out, const std::string& kms, const std::string& op);

// "data"."plaintext" of a decrypt response, base64-decoded (the DEK and its binding
// tag; unbind_dek() checks the tag).
SecureBytes plaintext(const json& out, const std::string& kms);

// GET keys/{kek}: "data"."latest_version" and, past version 1, its creation time in
// "data"."keys" (Unix seconds, kept as microseconds); 22023 "malformed response" otherwise.
KekVersion latest_version(const json& out, const std::string& kms);

// N of a "vault:vN:..." wrapped DEK; empty when it is not one.
std::string wrapped_version(ByteView wrapped);

}  // namespace vault

// ---------------------------------------------------------------- AWS KMS

namespace aws {

struct Site {
  std::string kms;
  std::string op;  // "Encrypt", "Decrypt", "ReEncrypt"
  std::string kek;
  std::string region;
  std::string endpoint;
  std::string credentials;  // where the credentials came from (Credentials::source), for the detail
};

// The error type of a response: "__type" after its last "#" (at most 100 characters
// used), "invalid error type" when it is not alphanumeric, empty when absent.
std::string error_type(const HttpResponse& response);

// Success for 200; retry for 5xx and the throttling types; otherwise a failure.
Verdict judge(const HttpResponse& response);

// The JSON object of a 200 response, else the Error of its type (AccessDenied →
// 42501; the signature and credential types → 28000; ...), or of its status when the
// type is absent or unknown (401 → 28000, 403 → 42501, 5xx → 58000, else 22023).
json result(const HttpResult& r, const Site& site);

// "CiphertextBlob" of an Encrypt or ReEncrypt response, base64-decoded (non-empty).
Bytes ciphertext_blob(const json& out, const std::string& kms, const std::string& op);

// "Plaintext" of a Decrypt response, base64-decoded.
SecureBytes plaintext(const json& out, const std::string& kms);

// The key ARN of a DescribeKey response ("KeyMetadata"."Arn").
std::string describe_key_arn(const json& out, const std::string& kms);

// One page of a ListKeyRotations response: adds its rotations to `count`, raises
// `latest` to the newest RotationDate (Unix microseconds), and returns NextMarker when
// "Truncated" (empty on the last page).
std::string key_rotations_page(const json& out, const std::string& kms, std::uint64_t& count, std::int64_t& latest);

}  // namespace aws

// ---------------------------------------------------------------- Google Cloud KMS

namespace gcp {

struct Site {
  std::string kms;
  std::string op;  // "encrypt", "decrypt"
  std::string kek;  // projects/P/locations/L/keyRings/R/cryptoKeys/K
  std::string endpoint;
  std::string token_source;  // BearerToken::describe(), named by a 28000
};

// A Google API error: {"error": {"code": 403, "message": "...", "status": "PERMISSION_DENIED"}}.
struct GoogleError {
  std::string status;   // e.g. "PERMISSION_DENIED"; empty when absent or not a status name
  std::string message;  // safe_message() of the message (kms_messages.hpp)
};
GoogleError google_error(const HttpResponse& response);

// Success for 2xx; retry 429, 5xx but 501, and the retryable statuses.
Verdict judge(const HttpResponse& response);

// The JSON object of a 2xx response, else the Error of its status name
// (UNAUTHENTICATED → 28000, PERMISSION_DENIED → 42501, NOT_FOUND → 42704,
// FAILED_PRECONDITION → 55000, RESOURCE_EXHAUSTED/UNAVAILABLE/INTERNAL/
// DEADLINE_EXCEEDED → 58000, a checksum complaint → 58000 "integrity check failed",
// INVALID_ARGUMENT on decrypt → 22000) or, without one, of its HTTP status.
json result(const HttpResult& r, const Site& site);

// The ciphertext of an encrypt response, after the integrity checks (58000
// "integrity check failed" when the request checksums were not verified, the key
// version named is not one of `kek`, or ciphertextCrc32c does not match).
Bytes encrypt_ciphertext(const json& out, const Site& site);

// The plaintext of a decrypt response, checked against plaintextCrc32c.
SecureBytes decrypt_plaintext(const json& out, const Site& site);

// GET {kek}: the primary version's number (after "/cryptoKeyVersions/") and its
// createTime; version 1 has no older one.
KekVersion primary_version(const json& out, const Site& site);

}  // namespace gcp

// ---------------------------------------------------------------- Azure Key Vault

namespace azure {

struct KeyRef {
  std::string name;
  std::string version;  // empty: the newest
};

bool valid_key_name(std::string_view name) noexcept;
bool valid_key_version(std::string_view version) noexcept;
bool allowed_algorithm(std::string_view alg) noexcept;

// A key identifier, https://{vault host}/keys/{name}/{version}: true when it is in the
// vault `vault` (same host and port; Key Vault writes https even for a test vault
// reached over http) and names one version of one key.
bool parse_kid(const std::string& kid, const UrlParts& vault, KeyRef& out);

struct Site {
  std::string kms;
  std::string op;        // "wrapkey", "unwrapkey"
  std::string kek;       // as the key names it: "name" or "name/version"
  std::string key_path;  // "/keys/name[/version]" the request went to
  std::string vault_url;
  std::string token_source;  // BearerToken::describe(), named by a 28000
};

// A Key Vault error: {"error": {"code": "Forbidden", "message": "...", "innererror": {"code": "KeyDisabled"}}}.
struct VaultError {
  std::string code, inner, message;
};
VaultError vault_error(const HttpResponse& response);

// Success for 2xx; retry 429 and 5xx but 501.
Verdict judge(const HttpResponse& response);

// The JSON object of a 2xx response, else the Error of its codes and status:
// "Unauthorized" or 401 → 28000; a disabled key (403 "KeyDisabled") → 55000;
// "Forbidden" or 403 → 42501; "KeyNotFound" or 404 → 42704; 429, 5xx → 58000; 400 on
// unwrapkey → 22000; else 22023.
json result(const HttpResult& r, const Site& site);

// The stored form of a wrapkey response, {"alg", "kid", "value"} as compact JSON,
// after checking that its kid names a version of `ref` in `vault`.
Bytes wrapkey_stored(const json& out, const Site& site, const KeyRef& ref, const UrlParts& vault,
                     const std::string& algorithm);

// A stored wrapped DEK, read and checked against the KEK before any request: the
// algorithm, the exact key version and the wrapped bytes (base64url, as stored).
struct StoredWrapped {
  std::string alg;
  KeyRef key;
  std::string value;
};
StoredWrapped parse_stored(ByteView wrapped, const std::string& kms, std::string_view kek, const KeyRef& ref,
                           const UrlParts& vault, const std::string& vault_url);

// "value" of an unwrapkey response, base64url-decoded.
SecureBytes unwrapkey_value(const json& out, const std::string& kms);

// GET /keys/{name}[/{version}]: the version of "key"."kid" (in `vault`, of key `ref`)
// and "attributes"."created".
KekVersion current_version(const json& out, const Site& site, const KeyRef& ref, const UrlParts& vault);

}  // namespace azure

}  // namespace pg_envelope::remote
