// Shared helpers of the remote KMS providers (see remote_kms.hpp).
#include "remote_kms.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <cctype>

#include "pg_envelope/crypto.hpp"
#include "pg_envelope/encoding.hpp"

namespace pg_envelope::remote {

namespace {

constexpr std::size_t kBindingTagSize = 16;

// Option names that would mean a secret was put into SQL: refused outright.
bool looks_secret(const std::string& name) {
  static const char* kWords[] = {"token", "secret", "password", "passwd", "credential", "private", "apikey",
                                 "api_key", "access_key", "client_secret"};
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower.size() > 5 && lower.compare(lower.size() - 5, 5, "_file") == 0) return false;  // a path, not a secret
  if (lower.size() > 4 && lower.compare(lower.size() - 4, 4, "_url") == 0) return false;    // an address ("token_url")
  return std::any_of(std::begin(kWords), std::end(kWords), [&](const char* w) { return lower.find(w) != std::string::npos; });
}

void binding_tag(const DekBinding& b, std::uint8_t out[kBindingTagSize]) {
  static constexpr std::string_view kLabel = "pg_envelope DEK binding v1";
  std::uint8_t ids[8];
  store_be32(ids, b.key_id);
  store_be32(ids + 4, b.version);
  std::uint8_t digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = ctx != nullptr && EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1 &&
            EVP_DigestUpdate(ctx, kLabel.data(), kLabel.size()) == 1 && EVP_DigestUpdate(ctx, ids, 8) == 1 &&
            EVP_DigestUpdate(ctx, b.key_name.data(), b.key_name.size()) == 1 &&
            EVP_DigestFinal_ex(ctx, digest, &len) == 1;
  EVP_MD_CTX_free(ctx);
  if (!ok) throw Error(sqlstate::kInternalError, "SHA-256 failed");
  std::copy(digest, digest + kBindingTagSize, out);
}

const char* sqlstate_of(FailureKind kind) noexcept {
  switch (kind) {
    case FailureKind::kAuth: return sqlstate::kInvalidAuthorizationSpecification;
    case FailureKind::kPermission: return sqlstate::kInsufficientPrivilege;
    case FailureKind::kNotFound: return sqlstate::kUndefinedObject;
    case FailureKind::kDisabled: return sqlstate::kObjectNotInPrerequisiteState;
    case FailureKind::kInvalidCiphertext: return sqlstate::kDataException;
    case FailureKind::kBadRequest: return sqlstate::kInvalidParameterValue;
    case FailureKind::kUnavailable: return sqlstate::kSystemError;
  }
  return sqlstate::kInternalError;
}

}  // namespace

Options::Options(const KmsConfig& config) : kms_(config.name) {
  obj_ = json::parse(config.options_json.empty() ? "{}" : config.options_json, nullptr, false);
  if (!obj_.is_object())
    throw Error(sqlstate::kInvalidParameterValue, "options of KMS \"" + kms_ + "\" must be a JSON object");
  for (auto it = obj_.begin(); it != obj_.end(); ++it)
    if (looks_secret(std::string(it.key().data(), it.key().size())))
      throw Error(sqlstate::kInvalidParameterValue,
                  "option \"" + std::string(it.key().data(), it.key().size()) + "\" of KMS \"" + kms_ + "\" looks like a secret",
                  "Secrets never go into SQL: they would be stored in envelope.kms and appear in logs and dumps.",
                  "Give credentials through the server's environment or a file named by an option such as "
                  "\"token_file\" (see docs/kms.md).");
}

std::string Options::required_string(const char* name) {
  known_.emplace_back(name);
  auto it = obj_.find(name);
  if (it == obj_.end() || !it->is_string() || it->get_ref<const SecureStdString&>().empty())
    throw Error(sqlstate::kInvalidParameterValue,
                "KMS \"" + kms_ + "\" needs option \"" + name + "\" (a non-empty string)");
  const auto& v = it->get_ref<const SecureStdString&>();
  return std::string(v.data(), v.size());
}

std::string Options::string_or(const char* name, std::string fallback) {
  known_.emplace_back(name);
  auto it = obj_.find(name);
  if (it == obj_.end()) return fallback;
  if (!it->is_string())
    throw Error(sqlstate::kInvalidParameterValue, "option \"" + std::string(name) + "\" of KMS \"" + kms_ +
                                                      "\" must be a string");
  const auto& v = it->get_ref<const SecureStdString&>();
  return std::string(v.data(), v.size());
}

long Options::integer_or(const char* name, long fallback, long min, long max) {
  known_.emplace_back(name);
  auto it = obj_.find(name);
  if (it == obj_.end()) return fallback;
  long value = min - 1;
  if (it->is_number_integer()) {
    auto v = it->get<std::int64_t>();
    if (v >= min && v <= max) value = static_cast<long>(v);
  } else if (it->is_string()) {
    const auto& s = it->get_ref<const SecureStdString&>();
    if (!s.empty() && s.size() <= 12 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      long v = std::stol(std::string(s.data(), s.size()));
      if (v >= min && v <= max) value = v;
    }
  }
  if (value < min)
    throw Error(sqlstate::kInvalidParameterValue, "invalid \"" + std::string(name) + "\" for KMS \"" + kms_ + "\"",
                "It must be an integer from " + std::to_string(min) + " to " + std::to_string(max) + ".");
  return value;
}

void Options::apply_ca_file(HttpOptions& http) {
  std::string ca = string_or("ca_file", "");
  if (!ca.empty()) {
    http.ca_file = ca;
    http.ca_file_fixed = true;
  }
}

void Options::finish() {
  for (auto it = obj_.begin(); it != obj_.end(); ++it)
    if (std::find(known_.begin(), known_.end(), std::string(it.key().data(), it.key().size())) == known_.end()) {
      std::string list;
      for (const auto& k : known_) list += (list.empty() ? "" : ", ") + k;
      throw Error(sqlstate::kInvalidParameterValue, "unknown option \"" + std::string(it.key().data(), it.key().size()) + "\" for KMS \"" + kms_ + "\"",
                  "Valid options for this provider: " + list + ".");
    }
}

SecureBytes bind_dek(ByteView dek, const DekBinding& binding) {
  SecureBytes out(dek.size() + kBindingTagSize);
  std::copy(dek.begin(), dek.end(), out.data());
  binding_tag(binding, out.data() + dek.size());
  return out;
}

SecureBytes unbind_dek(ByteView payload, const DekBinding& binding, const std::string& kms_name) {
  std::uint8_t tag[kBindingTagSize];
  binding_tag(binding, tag);
  if (payload.size() != kAes256KeySize + kBindingTagSize ||
      !constant_time_equal(payload.subspan(kAes256KeySize), {tag, kBindingTagSize}))
    throw Error(sqlstate::kDataException,
                "KMS \"" + kms_name + "\" returned a data key that does not belong to key \"" + binding.key_name +
                    "\" version " + std::to_string(binding.version),
                "The wrapped data key in envelope.data_key was moved from another key or version.");
  return SecureBytes(payload.data(), kAes256KeySize);
}

void fail(FailureKind kind, const std::string& kms, const std::string& op, const std::string& type,
          const std::string& detail) {
  const char* hint = "";
  switch (kind) {
    case FailureKind::kAuth:
      hint = "Check the credentials the server process uses for this KMS (see docs/kms.md).";
      break;
    case FailureKind::kPermission:
      hint = "Grant the server's KMS identity the permission this operation needs (see docs/kms.md).";
      break;
    case FailureKind::kNotFound:
      hint = "Check the KEK name of the key and the KMS options.";
      break;
    case FailureKind::kDisabled:
      hint = "Enable the KEK in the KMS.";
      break;
    case FailureKind::kInvalidCiphertext:
      hint = "The wrapped data key or its KEK changed outside pg_envelope.";
      break;
    case FailureKind::kBadRequest:
      hint = "Check the KMS options and the key's KEK.";
      break;
    case FailureKind::kUnavailable:
      hint = "The KMS could not be reached or kept failing; try again later.";
      break;
  }
  throw Error(sqlstate_of(kind), "KMS \"" + kms + "\" " + op + " failed: " + type, detail, hint);
}

void fail_transport(const HttpResult& r, const std::string& kms, const std::string& op) {
  std::string detail = "After " + std::to_string(r.attempts) + " attempt(s) in " + std::to_string(r.elapsed_ms) +
                       " ms: " + (r.failure_text.empty() ? "no response" : r.failure_text) + ".";
  switch (r.failure) {
    case HttpFailure::kTls:
      throw Error(sqlstate::kConnectionFailure, "KMS \"" + kms + "\" " + op + " failed: TLS error", detail,
                  "Check the KMS certificate and envelope.kms_ca_file or the \"ca_file\" option.");
    case HttpFailure::kTimeout:
      fail(FailureKind::kUnavailable, kms, op, "timeout", detail);
    case HttpFailure::kInterrupted:
      throw Error(sqlstate::kQueryCanceled, "KMS \"" + kms + "\" " + op + " was interrupted", detail);
    default:
      fail(FailureKind::kUnavailable, kms, op, "unreachable", detail);
  }
}

void set_json_body(HttpRequest& rq, const json& body) { rq.body = dump_json_secret(body); }

json success_object(const HttpResult& r, const std::string& kms, const std::string& op) {
  json out = parse_body(r.response);
  if (!out.is_object())
    fail(FailureKind::kBadRequest, kms, op, "malformed response", "The response is not a JSON object.");
  return out;
}

json parse_body(const HttpResponse& response) { return parse_json_secret(response.body.view()); }

}  // namespace pg_envelope::remote
