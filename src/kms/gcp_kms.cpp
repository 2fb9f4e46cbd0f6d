// Google Cloud KMS provider: the REST v1 API with symmetric (ENCRYPT_DECRYPT) keys.
//
//   wrap   POST {endpoint}/v1/{kek}:encrypt
//            {"plaintext": b64(DEK || binding tag), "additionalAuthenticatedData": b64(AAD),
//             "plaintextCrc32c": "<decimal>", "additionalAuthenticatedDataCrc32c": "<decimal>"}
//          -> {"name", "ciphertext", "ciphertextCrc32c", "verifiedPlaintextCrc32c",
//              "verifiedAdditionalAuthenticatedDataCrc32c"}
//   unwrap POST {endpoint}/v1/{kek}:decrypt
//            {"ciphertext", "additionalAuthenticatedData", "ciphertextCrc32c",
//             "additionalAuthenticatedDataCrc32c"} -> {"plaintext", "plaintextCrc32c"}
//   rewrap decrypt, then encrypt (Cloud KMS has no server-side re-encrypt)
//
// The KEK is the full CryptoKey name, projects/P/locations/L/keyRings/R/cryptoKeys/K:
// encrypt uses its primary version, decrypt finds the version in the ciphertext.
// AAD = "pg_envelope:" key name ":" key id ":" version, so Cloud KMS itself refuses a
// wrapped DEK used for another key or version; the binding tag checks it once more.
// Integrity (Google's guidance for these fields): every request carries CRC-32C
// checksums, the response must confirm it verified them and carry a checksum of
// what it returns; any mismatch fails the call ("integrity check failed").
// The wrapped DEK stored in envelope.data_key is the raw ciphertext (base64-decoded).
//
// Options: "endpoint" (default https://cloudkms.googleapis.com), "token_file",
// "credentials_file" (a service-account JSON key), "token_url" (overrides the key's
// token_uri), "metadata_url" (e.g. http://metadata.google.internal; no default),
// "ca_file". Token, first configured source wins (token_file and credentials_file
// exclude each other): "token_file" (re-read when it changes), "credentials_file"
// (JWT bearer grant, gcp_credentials.hpp), the server's GOOGLE_OAUTH_ACCESS_TOKEN,
// the service-account key named by the server's GOOGLE_APPLICATION_CREDENTIALS, then
// the metadata server's service-account token (GET
// {metadata_url}/computeMetadata/v1/instance/service-accounts/default/token with
// "Metadata-Flavor: Google"). Granted and metadata tokens are cached per backend until
// shortly before expires_in; one the KMS rejects (401) is fetched anew once.
#include <algorithm>
#include <cctype>
#include <iterator>

#include "bearer_token.hpp"
#include "gcp_credentials.hpp"
#include "kms_messages.hpp"
#include "kms_responses.hpp"
#include "pg_envelope/crc32c.hpp"
#include "pg_envelope/crypto.hpp"
#include "pg_envelope/encoding.hpp"
#include "remote_kms.hpp"
#include "url.hpp"

namespace pg_envelope {

namespace remote::gcp {

namespace {

bool retryable_status(const std::string& s) {
  return s == "RESOURCE_EXHAUSTED" || s == "UNAVAILABLE" || s == "INTERNAL" || s == "DEADLINE_EXCEEDED";
}

// A checksum field: proto3 JSON writes int64 as a decimal string; a number is
// accepted too. False when absent or not a 32-bit value.
bool crc_field(const json& out, const char* name, std::uint32_t& value) {
  auto it = out.find(name);
  if (it == out.end()) return false;
  if (it->is_number_unsigned()) {
    auto v = it->get<std::uint64_t>();
    value = static_cast<std::uint32_t>(v);
    return v <= 0xFFFFFFFFu;
  }
  if (!it->is_string()) return false;
  const auto& s = it->get_ref<const SecureStdString&>();
  if (s.empty() || s.size() > 10) return false;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  value = static_cast<std::uint32_t>(v);
  return v <= 0xFFFFFFFFu;
}

bool is_true(const json& out, const char* name) {
  auto it = out.find(name);
  return it != out.end() && it->is_boolean() && it->get<bool>();
}

// "locations/..." of "projects/P/locations/...": empty when not of that shape.
std::string_view without_project(std::string_view name) {
  if (name.rfind("projects/", 0) != 0) return {};
  std::size_t slash = name.find('/', 9);
  return slash == std::string_view::npos ? std::string_view{} : name.substr(slash + 1);
}

[[noreturn]] void integrity_failure(const Site& site, const std::string& why) {
  fail(FailureKind::kUnavailable, site.kms, site.op, "integrity check failed",
       why + " CryptoKey \"" + site.kek + "\" at " + site.endpoint + ".");
}

}  // namespace

GoogleError google_error(const HttpResponse& resp) {
  GoogleError e;
  json body = parse_body(resp);
  auto err = body.is_object() ? body.find("error") : body.end();
  if (err == body.end() || !err->is_object()) return e;
  if (auto it = err->find("status"); it != err->end() && it->is_string()) {
    const auto& s = it->get_ref<const SecureStdString&>();
    if (s.size() <= 40 && std::all_of(s.begin(), s.end(), [](char c) { return (c >= 'A' && c <= 'Z') || c == '_'; }))
      e.status.assign(s.data(), s.size());
  }
  if (auto it = err->find("message"); it != err->end() && it->is_string()) {
    const auto& m = it->get_ref<const SecureStdString&>();
    e.message = safe_message(std::string_view(m.data(), m.size()));
  }
  return e;
}

Verdict judge(const HttpResponse& resp) {
  if (resp.status >= 200 && resp.status < 300) return Verdict::kSuccess;
  if (resp.status == 429 || (resp.status >= 500 && resp.status != 501)) return Verdict::kRetry;
  return retryable_status(google_error(resp).status) ? Verdict::kRetry : Verdict::kFail;
}

json result(const HttpResult& r, const Site& site) {
  if (r.failure != HttpFailure::kNone) fail_transport(r, site.kms, site.op);
  long s = r.response.status;
  if (s >= 200 && s < 300) return success_object(r, site.kms, site.op);

  GoogleError e = google_error(r.response);
  std::string type = e.status.empty() ? "HTTP " + std::to_string(s) : e.status;
  std::string detail = "CryptoKey \"" + site.kek + "\" at " + site.endpoint + " (HTTP " + std::to_string(s) + ", " +
                       std::to_string(r.attempts) + " attempt(s))" + (e.message.empty() ? "" : ": " + e.message) + ".";
  std::string auth_detail = detail + " The token came from " + site.token_source + ".";
  // The status name decides; the HTTP status only when there is none.
  const std::string& st = e.status;
  if (st == "UNAUTHENTICATED") fail(FailureKind::kAuth, site.kms, site.op, type, auth_detail);
  if (st == "PERMISSION_DENIED") fail(FailureKind::kPermission, site.kms, site.op, type, detail);
  if (st == "NOT_FOUND") fail(FailureKind::kNotFound, site.kms, site.op, type, detail);
  if (st == "FAILED_PRECONDITION") fail(FailureKind::kDisabled, site.kms, site.op, type, detail);
  if (retryable_status(st)) fail(FailureKind::kUnavailable, site.kms, site.op, type, detail);
  if (st != "INVALID_ARGUMENT") {  // no status name, or one not mapped above
    if (s == 401) fail(FailureKind::kAuth, site.kms, site.op, type, auth_detail);
    if (s == 403) fail(FailureKind::kPermission, site.kms, site.op, type, detail);
    if (s == 404) fail(FailureKind::kNotFound, site.kms, site.op, type, detail);
  }
  if (s == 429 || s >= 500) fail(FailureKind::kUnavailable, site.kms, site.op, type, detail);
  if (st == "INVALID_ARGUMENT" || s == 400) {
    // Cloud KMS checks our CRC-32C fields; a mismatch is corruption on the way.
    if (e.message.find("checksum") != std::string::npos) integrity_failure(site, "Cloud KMS: " + e.message + ".");
    if (site.op == "decrypt") fail(FailureKind::kInvalidCiphertext, site.kms, site.op, type, detail);
  }
  fail(FailureKind::kBadRequest, site.kms, site.op, type, detail);
}

Bytes encrypt_ciphertext(const json& out, const Site& site) {
  if (!is_true(out, "verifiedPlaintextCrc32c") || !is_true(out, "verifiedAdditionalAuthenticatedDataCrc32c"))
    integrity_failure(site,
                      "Cloud KMS did not confirm that it verified the request checksums "
                      "(verifiedPlaintextCrc32c, verifiedAdditionalAuthenticatedDataCrc32c).");
  // The version used must belong to the KEK. The project is left out of the
  // comparison: Google may name it by number where the KEK names it by id.
  if (auto it = out.find("name"); it != out.end()) {
    std::string_view used = it->is_string() ? std::string_view(it->get_ref<const SecureStdString&>()) : "";
    std::string expected = std::string(without_project(site.kek)) + "/cryptoKeyVersions/";
    if (without_project(used).rfind(expected, 0) != 0)
      integrity_failure(site, "The response names a key version of another CryptoKey.");
  }
  Bytes ciphertext;
  auto it = out.find("ciphertext");
  if (it == out.end() || !it->is_string() ||
      !base64_decode_strict(std::string_view(it->get_ref<const SecureStdString&>()), ciphertext) || ciphertext.empty())
    fail(FailureKind::kBadRequest, site.kms, "encrypt", "malformed response", "The response has no ciphertext.");
  std::uint32_t crc = 0;
  if (!crc_field(out, "ciphertextCrc32c", crc) || crc != crc32c(ciphertext))
    integrity_failure(site, "The ciphertext does not match the response's ciphertextCrc32c.");
  return ciphertext;
}

SecureBytes decrypt_plaintext(const json& out, const Site& site) {
  SecureBytes payload;
  auto it = out.find("plaintext");
  if (it == out.end() || !it->is_string() || !base64_decode_secret(std::string_view(it->get_ref<const SecureStdString&>()), payload))
    fail(FailureKind::kBadRequest, site.kms, "decrypt", "malformed response", "The response has no plaintext.");
  std::uint32_t crc = 0;
  if (!crc_field(out, "plaintextCrc32c", crc) || crc != crc32c(payload.view()))
    integrity_failure(site, "The plaintext does not match the response's plaintextCrc32c.");
  return payload;
}

KekVersion primary_version(const json& out, const Site& site) {
  auto bad = [&site](const char* what) {
    fail(FailureKind::kBadRequest, site.kms, "get key", "malformed response", what);
  };
  auto p = out.is_object() ? out.find("primary") : out.end();
  if (p == out.end() || !p->is_object())
    bad("The CryptoKey has no primary version (is it an ENCRYPT_DECRYPT key?).");
  auto n = p->find("name");
  auto t = p->find("createTime");
  if (n == p->end() || !n->is_string() || t == p->end() || !t->is_string())
    bad("The primary version has no name or createTime.");
  std::string_view name(n->get_ref<const SecureStdString&>());
  std::string expected = std::string(without_project(site.kek)) + "/cryptoKeyVersions/";
  if (without_project(name).rfind(expected, 0) != 0)
    integrity_failure(site, "The response names a key version of another CryptoKey.");
  std::string_view number = without_project(name).substr(expected.size());
  if (number.empty() || number.size() > 10 ||
      !std::all_of(number.begin(), number.end(), [](char c) { return c >= '0' && c <= '9'; }))
    bad("The primary version's name does not end in a version number.");
  KekVersion v;
  v.version = std::string(number);
  if (v.version != "1" && !parse_rfc3339(std::string_view(t->get_ref<const SecureStdString&>()), v.since_us))
    bad("The primary version's createTime is not an RFC 3339 time.");
  return v;
}

}  // namespace remote::gcp

namespace {

using remote::FailureKind;
using remote::json;
using remote::SecureStdString;

constexpr const char* kDefaultEndpoint = "https://cloudkms.googleapis.com";
constexpr const char* kMetadataTokenPath = "/computeMetadata/v1/instance/service-accounts/default/token";

// One resource id of a CryptoKey name. Key ring and key ids are 1 to 63 characters
// of [A-Za-z0-9_-]; locations are similar; project ids are lower case, may hold
// dots and a colon (domain-scoped projects), and may be a project number.
bool valid_id(std::string_view id, bool project) {
  if (id.empty() || id.size() > (project ? 100u : 63u)) return false;
  return std::all_of(id.begin(), id.end(), [&](char c) {
    bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (project) return alnum || c == '-' || c == '.' || c == ':';
    return alnum || (c >= 'A' && c <= 'Z') || c == '_' || c == '-';
  });
}

std::string trimmed_url(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

class GcpKms final : public KmsProvider {
 public:
  GcpKms(const KmsConfig& cfg, const KmsContext& ctx) : name_(cfg.name), ctx_(ctx), token_(make_token(cfg)) {}

  const std::string& kms_name() const override { return name_; }

  std::string default_kek() const override {
    throw Error(sqlstate::kInvalidParameterValue, "KMS \"" + name_ + "\" needs a KEK",
                "A Cloud KMS KEK is a CryptoKey name, projects/P/locations/L/keyRings/R/cryptoKeys/K.",
                "Pass kek => 'projects/.../cryptoKeys/...' to envelope.create_key().");
  }

  void validate_kek(std::string_view kek) const override {
    static constexpr std::string_view kLabels[] = {"projects", "locations", "keyRings", "cryptoKeys"};
    bool ok = kek.size() <= 512;
    std::size_t pos = 0;
    for (std::size_t i = 0; ok && i < std::size(kLabels); ++i) {
      std::size_t slash = kek.find('/', pos);
      ok = slash != std::string_view::npos && kek.substr(pos, slash - pos) == kLabels[i];
      if (!ok) break;
      pos = slash + 1;
      std::size_t end = i + 1 < std::size(kLabels) ? kek.find('/', pos) : kek.size();
      ok = end != std::string_view::npos && valid_id(kek.substr(pos, end - pos), i == 0);
      pos = end + 1;
    }
    if (!ok)
      throw Error(sqlstate::kInvalidParameterValue, "invalid Cloud KMS key name for KMS \"" + name_ + "\"",
                  "A KEK is a CryptoKey resource name, projects/P/locations/L/keyRings/R/cryptoKeys/K, without "
                  "a version (decryption finds the version in the ciphertext).");
  }

  Bytes wrap(std::string_view kek, const DekBinding& b, ByteView dek) override {
    validate_kek(kek);
    SecureBytes payload = remote::bind_dek(dek, b);
    std::string aad = aad_of(b);
    json body;
    body["plaintext"] = std::string_view(base64_encode_secret(payload.view()).view());
    body["plaintextCrc32c"] = std::to_string(crc32c(payload.view()));
    body["additionalAuthenticatedData"] = base64_encode(as_bytes(aad));
    body["additionalAuthenticatedDataCrc32c"] = std::to_string(crc32c(as_bytes(aad)));
    return remote::gcp::encrypt_ciphertext(call("encrypt", kek, body), site("encrypt", kek));
  }

  SecureBytes unwrap(std::string_view kek, const DekBinding& b, ByteView wrapped) override {
    validate_kek(kek);
    std::string aad = aad_of(b);
    json body;
    body["ciphertext"] = base64_encode(wrapped);
    body["ciphertextCrc32c"] = std::to_string(crc32c(wrapped));
    body["additionalAuthenticatedData"] = base64_encode(as_bytes(aad));
    body["additionalAuthenticatedDataCrc32c"] = std::to_string(crc32c(as_bytes(aad)));
    SecureBytes payload = remote::gcp::decrypt_plaintext(call("decrypt", kek, body), site("decrypt", kek));
    return remote::unbind_dek(payload.view(), b, name_);
  }

  // encrypt uses the CryptoKey's primary version; a ciphertext does not say which
  // version it is under, so callers compare wrap times with the primary's createTime
  // (cloudkms.cryptoKeys.get, e.g. roles/cloudkms.viewer).
  std::optional<KekVersion> current_kek_version(std::string_view kek) override {
    validate_kek(kek);
    return remote::gcp::primary_version(call(nullptr, kek, json()), site("get key", kek));
  }

 private:
  // Reads the options (in the constructor's initializer list, so the token source
  // is built from them) and validates them.
  remote::BearerToken make_token(const KmsConfig& cfg) {
    remote::Options o(cfg);
    endpoint_ = trimmed_url(o.string_or("endpoint", kDefaultEndpoint));
    std::string token_file = o.string_or("token_file", "");
    std::string credentials_file = o.string_or("credentials_file", "");
    std::string token_url = o.string_or("token_url", "");
    std::string metadata_url = trimmed_url(o.string_or("metadata_url", ""));
    o.apply_ca_file(ctx_.http);
    o.finish();
    remote::check_base_url(endpoint_, name_, "endpoint");
    if (!metadata_url.empty()) remote::check_base_url(metadata_url, name_, "metadata_url", /*metadata=*/true);
    if (!token_url.empty()) remote::check_credential_url(token_url, name_, "the option \"token_url\"");
    if (!token_file.empty() && !credentials_file.empty())
      throw Error(sqlstate::kInvalidParameterValue, "KMS \"" + name_ + "\" has two credential sources",
                  "The options \"token_file\" and \"credentials_file\" are both set.",
                  "Keep one: a service-account key (credentials_file) or a token kept fresh by an agent (token_file).");
    remote::MetadataTokenSource md{"metadata_url", metadata_url.empty() ? "" : metadata_url + kMetadataTokenPath,
                                   "Metadata-Flavor: Google"};
    std::unique_ptr<remote::OAuthTokenSource> grant;
    if (!credentials_file.empty())
      grant = remote::gcp::make_service_account_source(name_, credentials_file, "option \"credentials_file\"", token_url);
    std::string kms = name_;
    auto from_env = [kms, token_url](const KmsContext& ctx) -> std::unique_ptr<remote::OAuthTokenSource> {
      const char* path = ctx.getenv ? ctx.getenv("GOOGLE_APPLICATION_CREDENTIALS") : nullptr;
      if (path == nullptr || *path == '\0') return nullptr;
      // Only a service-account key is used; another type of credentials (a user's,
      // external_account) is an error rather than a silent fall-through.
      SecretString text = remote::read_secret_file(path, kms, "credentials");
      std::string type = remote::gcp::credentials_type(text.view());
      if (type != "service_account")
        throw Error(sqlstate::kConfigFileError, "unsupported Google credentials for KMS \"" + kms + "\"",
                    "The file \"" + std::string(path) + "\" named by the server's GOOGLE_APPLICATION_CREDENTIALS " +
                        (type.empty() ? std::string("is not a Google credentials file.")
                                      : "holds credentials of type \"" + remote::safe_message(type) +
                                            "\", not \"service_account\"."),
                    "Use a service-account key, or unset GOOGLE_APPLICATION_CREDENTIALS to use the metadata server.");
      return remote::gcp::make_service_account_source(kms, path, "the server's GOOGLE_APPLICATION_CREDENTIALS",
                                                      token_url);
    };
    return remote::BearerToken(name_, token_file, "GOOGLE_OAUTH_ACCESS_TOKEN", std::move(grant), from_env,
                               "GOOGLE_APPLICATION_CREDENTIALS", std::move(md));
  }

  static std::string aad_of(const DekBinding& b) {
    return "pg_envelope:" + b.key_name + ":" + std::to_string(b.key_id) + ":" + std::to_string(b.version);
  }

  remote::gcp::Site site(const char* op, std::string_view kek) const {
    return {name_, op, std::string(kek), endpoint_, token_.describe()};
  }

  // `op` nullptr: GET the CryptoKey itself.
  json call(const char* op, std::string_view kek, const json& body) {
    HttpRequest rq;
    if (op == nullptr) {
      rq.method = "GET";
      rq.url = endpoint_ + "/v1/" + std::string(kek);
    } else {
      rq.url = endpoint_ + "/v1/" + std::string(kek) + ":" + op;
      rq.headers.push_back("Content-Type: application/json");
      remote::set_json_body(rq, body);
    }
    HttpResult r = token_.call(rq, ctx_, remote::gcp::judge);
    return remote::gcp::result(r, site(op == nullptr ? "get key" : op, kek));
  }

  std::string name_;
  KmsContext ctx_;
  std::string endpoint_;
  remote::BearerToken token_;
};

}  // namespace

std::unique_ptr<KmsProvider> make_gcp_kms(const KmsConfig& cfg, const KmsContext& ctx) {
  return std::make_unique<GcpKms>(cfg, ctx);
}

}  // namespace pg_envelope
