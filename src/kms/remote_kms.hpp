// Shared pieces of the remote (HTTP) KMS providers: option parsing, the DEK binding
// tag, base64, and the mapping of HTTP outcomes to errors that name the KMS, the
// operation and the provider's error type. Pure C++.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>
#include <string_view>

#include "pg_envelope/envelope_format.hpp"
#include "pg_envelope/error.hpp"
#include "pg_envelope/http.hpp"
#include "pg_envelope/kms.hpp"

namespace pg_envelope::remote {

// JSON whose strings wipe their memory when freed: response bodies carry key material.
using SecureStdString = std::basic_string<char, std::char_traits<char>, ZeroingAllocator<char>>;
using json = nlohmann::basic_json<std::map, std::vector, SecureStdString>;

// Options of one KMS; every read marks the option as known, and finish() rejects the
// rest, so a misspelt option is an error rather than silently ignored.
class Options {
 public:
  Options(const KmsConfig& config);
  std::string required_string(const char* name);
  std::string string_or(const char* name, std::string fallback);
  void finish();
  const std::string& kms_name() const { return kms_; }

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

std::string b64(ByteView bytes);
SecretString b64_secret(ByteView bytes);
bool unb64(std::string_view text, SecureBytes& out);  // standard alphabet, padded

// Reads a credential file (token), trimmed; refuses files that other users (outside
// the owner and group) can access.
SecretString read_secret_file(const std::string& path, const std::string& kms_name, const char* what);

// An error for a failed call: "KMS "vault" Decrypt failed: <type>" with SQLSTATE by kind.
enum class FailureKind { kAuth, kPermission, kNotFound, kDisabled, kInvalidCiphertext, kBadRequest, kUnavailable };
[[noreturn]] void fail(FailureKind kind, const std::string& kms, const std::string& op, const std::string& type,
                       const std::string& detail);
// Maps a transport-level failure (no usable response) to an error.
[[noreturn]] void fail_transport(const HttpResult& r, const std::string& kms, const std::string& op);

// Sets a JSON request body (serialised into wiping memory).
void set_json_body(HttpRequest& rq, const json& body);

// The JSON object of a successful (2xx) response; a malformed one is an error naming
// the KMS and operation.
json success_object(const HttpResult& r, const std::string& kms, const char* op);

// Parses a JSON body without exceptions (bodies may hold key material, and parser
// messages quote input): a discarded value when it is not JSON.
json parse_body(const HttpResponse& response);

}  // namespace pg_envelope::remote
