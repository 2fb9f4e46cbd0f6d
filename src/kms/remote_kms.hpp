// Shared pieces of the remote (HTTP) KMS providers: option parsing, the DEK binding
// tag, JSON bodies, and the mapping of HTTP outcomes to errors that name the KMS, the
// operation and the provider's error type. Pure C++.
//
// What else they share has a file of its own: URL checks (url.hpp), service error
// text (kms_messages.hpp), credential files (secret_file.hpp), bearer tokens
// (bearer_token.hpp), base64 (pg_envelope/encoding.hpp).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "pg_envelope/error.hpp"
#include "pg_envelope/http.hpp"
#include "pg_envelope/kms.hpp"
#include "pg_envelope/secrets.hpp"
#include "secure_json.hpp"

namespace pg_envelope::remote {

// Options of one KMS; every read marks the option as known, and finish() rejects the
// rest, so a misspelt option is an error rather than silently ignored.
class Options {
 public:
  Options(const KmsConfig& config);
  std::string required_string(const char* name);
  std::string string_or(const char* name, std::string fallback);
  // An integer option: a JSON integer or a string of decimal digits, in [min, max];
  // `fallback` when absent. Anything else: Error 22023 naming the range.
  long integer_or(const char* name, long fallback, long min, long max);
  // Reads the "ca_file" option (a string, optional): when set, `http` verifies this
  // KMS's certificate against that file instead of envelope.kms_ca_file
  // (HttpOptions::ca_file_fixed, which the settings refresh keeps).
  void apply_ca_file(HttpOptions& http);
  void finish();

 private:
  std::string kms_;
  json obj_;
  std::vector<std::string> known_;
};

// A DEK travels to and from the KMS as DEK(32) || binding tag(16), where the tag is
// SHA-256("pg_envelope DEK binding v1" || key_id || version || key name)[0..16]: an
// unwrapped DEK that carries another key's tag is refused even when the KMS itself
// cannot bind associated data (Vault Transit without AEAD data, Azure wrapkey).
SecureBytes bind_dek(ByteView dek, const DekBinding& binding);
SecureBytes unbind_dek(ByteView payload, const DekBinding& binding, const std::string& kms_name);

// An error for a failed call: "KMS "vault" Decrypt failed: <type>", with the SQLSTATE
// of its kind, the same for every provider (docs/kms.md, "Errors"):
//   kAuth              28000 the KMS does not accept who we are: no, malformed, bad or
//                            expired credentials (HTTP 401 and the providers' equivalents)
//   kPermission        42501 the KMS knows who we are and refuses the operation (HTTP 403)
//   kNotFound          42704 no such KEK
//   kDisabled          55000 the KEK exists but may not be used now
//   kInvalidCiphertext 22000 the wrapped DEK does not decrypt
//   kBadRequest        22023 any other refusal, a malformed response
//   kUnavailable       58000 unreachable, timeouts, throttling and 5xx after the retries
enum class FailureKind { kAuth, kPermission, kNotFound, kDisabled, kInvalidCiphertext, kBadRequest, kUnavailable };
[[noreturn]] void fail(FailureKind kind, const std::string& kms, const std::string& op, const std::string& type,
                       const std::string& detail);
// Maps a transport-level failure (no usable response) to an error.
[[noreturn]] void fail_transport(const HttpResult& r, const std::string& kms, const std::string& op);

// Sets a JSON request body (serialised into wiping memory, dump_json_secret).
void set_json_body(HttpRequest& rq, const json& body);

// The JSON object of a successful (2xx) response; a malformed one is an error naming
// the KMS and operation (22023 "malformed response").
json success_object(const HttpResult& r, const std::string& kms, const std::string& op);

// Parses a JSON body without exceptions (bodies may hold key material, and parser
// messages quote input): a discarded value when it is not JSON (parse_json_secret).
json parse_body(const HttpResponse& response);

}  // namespace pg_envelope::remote
