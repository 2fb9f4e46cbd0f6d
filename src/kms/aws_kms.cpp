// AWS KMS provider: the JSON 1.1 protocol (X-Amz-Target: TrentService.*), signed with
// SigV4 by libcurl (CURLOPT_AWS_SIGV4).
//
//   wrap   TrentService.Encrypt    Plaintext = DEK || binding tag, EncryptionContext
//   unwrap TrentService.Decrypt    KeyId + the same EncryptionContext
//   rewrap TrentService.ReEncrypt  re-wrapped inside KMS (envelope.rewrap_key() still
//                                  unwraps old and new forms once to verify them)
//
// EncryptionContext = {"pg_envelope:key": name, "pg_envelope:key_id": id,
// "pg_envelope:version": n}, so KMS itself refuses a wrapped DEK used for another key.
// Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN in the
// server's environment, else the shared credentials file (option "credentials_file",
// AWS_SHARED_CREDENTIALS_FILE, or ~/.aws/credentials) and profile (option "profile",
// AWS_PROFILE, or "default").
#include <sys/stat.h>

#include <fstream>

#include "remote_kms.hpp"

namespace pg_envelope {

namespace {

using remote::FailureKind;
using remote::json;

struct AwsCredentials {
  SecretString access_key;
  SecretString secret_key;
  SecretString session_token;
};

std::string trim(std::string s) {
  auto sp = [](unsigned char c) { return std::isspace(c); };
  while (!s.empty() && sp(s.back())) s.pop_back();
  std::size_t i = 0;
  while (i < s.size() && sp(s[i])) ++i;
  return s.substr(i);
}

class AwsKms final : public KmsProvider {
 public:
  AwsKms(const KmsConfig& cfg, const KmsContext& ctx) : name_(cfg.name), ctx_(ctx) {
    remote::Options o(cfg);
    region_ = o.required_string("region");
    endpoint_ = o.string_or("endpoint", "https://kms." + region_ + ".amazonaws.com");
    while (!endpoint_.empty() && endpoint_.back() == '/') endpoint_.pop_back();
    profile_ = o.string_or("profile", "");
    credentials_file_ = o.string_or("credentials_file", "");
    std::string ca = o.string_or("ca_file", "");
    if (!ca.empty()) {
      ctx_.http.ca_file = ca;
      ctx_.http.ca_file_fixed = true;
    }
    o.finish();
    for (char c : region_)
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
        throw Error(sqlstate::kInvalidParameterValue, "invalid \"region\" for KMS \"" + name_ + "\"");
    check_kms_url(endpoint_, name_);
  }

  const std::string& kms_name() const override { return name_; }

  std::string default_kek() const override {
    throw Error(sqlstate::kInvalidParameterValue, "KMS \"" + name_ + "\" needs a KEK",
                "An AWS KMS KEK is a key id, key ARN, alias name (alias/...) or alias ARN.",
                "Pass kek => 'alias/your-key' to envelope.create_key().");
  }

  void validate_kek(std::string_view kek) const override {
    bool ok = !kek.empty() && kek.size() <= 2048;
    for (char c : kek) ok = ok && c > ' ' && c < 127 && c != '"' && c != '\\';
    if (!ok)
      throw Error(sqlstate::kInvalidParameterValue, "invalid AWS KMS key id for KMS \"" + name_ + "\"",
                  "Use a key id, key ARN, alias/name or alias ARN.");
  }

  Bytes wrap(std::string_view kek, const DekBinding& b, ByteView dek) override {
    validate_kek(kek);
    SecureBytes payload = remote::bind_dek(dek, b);
    json body;
    body["KeyId"] = std::string(kek);
    body["Plaintext"] = std::string_view(remote::b64_secret(payload.view()).view());
    body["EncryptionContext"] = context(b);
    return blob_of(call("Encrypt", body, kek), "Encrypt", "CiphertextBlob");
  }

  SecureBytes unwrap(std::string_view kek, const DekBinding& b, ByteView wrapped) override {
    validate_kek(kek);
    json body;
    body["KeyId"] = std::string(kek);
    body["CiphertextBlob"] = remote::b64(wrapped);
    body["EncryptionContext"] = context(b);
    json out = call("Decrypt", body, kek);
    SecureBytes payload;
    auto it = out.is_object() ? out.find("Plaintext") : out.end();
    if (it == out.end() || !it->is_string() ||
        !remote::unb64(std::string_view(it->get_ref<const remote::SecureStdString&>()), payload))
      remote::fail(FailureKind::kBadRequest, name_, "Decrypt", "malformed response", "The response has no Plaintext.");
    return remote::unbind_dek(payload.view(), b, name_);
  }

  Bytes rewrap(std::string_view old_kek, std::string_view new_kek, const DekBinding& b, ByteView wrapped) override {
    validate_kek(old_kek);
    validate_kek(new_kek);
    json body;
    body["CiphertextBlob"] = remote::b64(wrapped);
    body["SourceKeyId"] = std::string(old_kek);
    body["SourceEncryptionContext"] = context(b);
    body["DestinationKeyId"] = std::string(new_kek);
    body["DestinationEncryptionContext"] = context(b);
    return blob_of(call("ReEncrypt", body, new_kek), "ReEncrypt", "CiphertextBlob");
  }

 private:
  static json context(const DekBinding& b) {
    json c;
    c["pg_envelope:key"] = b.key_name;
    c["pg_envelope:key_id"] = std::to_string(b.key_id);
    c["pg_envelope:version"] = std::to_string(b.version);
    return c;
  }

  AwsCredentials credentials() {
    AwsCredentials c;
    auto env = [&](const char* n) -> const char* {
      const char* v = ctx_.getenv ? ctx_.getenv(n) : nullptr;
      return (v && *v) ? v : nullptr;
    };
    if (env("AWS_ACCESS_KEY_ID") && env("AWS_SECRET_ACCESS_KEY")) {
      c.access_key = SecretString(env("AWS_ACCESS_KEY_ID"));
      c.secret_key = SecretString(env("AWS_SECRET_ACCESS_KEY"));
      if (env("AWS_SESSION_TOKEN")) c.session_token = SecretString(env("AWS_SESSION_TOKEN"));
      return c;
    }
    std::string file = credentials_file_;
    if (file.empty() && env("AWS_SHARED_CREDENTIALS_FILE")) file = env("AWS_SHARED_CREDENTIALS_FILE");
    if (file.empty() && env("HOME")) file = std::string(env("HOME")) + "/.aws/credentials";
    std::string profile = !profile_.empty() ? profile_ : (env("AWS_PROFILE") ? env("AWS_PROFILE") : "default");
    struct stat st;
    if (::stat(file.c_str(), &st) == 0 && (st.st_mode & S_IRWXO) != 0)
      remote::fail(FailureKind::kAuth, name_, "authentication", "credentials file is world-accessible",
                   "File \"" + file + "\" must not be accessible to other users.");
    std::ifstream in(file);
    std::string line, section;
    while (in && std::getline(in, line)) {
      std::string t = trim(line);
      if (t.empty() || t[0] == '#' || t[0] == ';') continue;
      if (t.front() == '[' && t.back() == ']') {
        section = trim(t.substr(1, t.size() - 2));
        continue;
      }
      if (section != profile) continue;
      auto eq = t.find('=');
      if (eq == std::string::npos) continue;
      std::string k = trim(t.substr(0, eq)), v = trim(t.substr(eq + 1));
      if (k == "aws_access_key_id") c.access_key = SecretString(v);
      if (k == "aws_secret_access_key") c.secret_key = SecretString(v);
      if (k == "aws_session_token") c.session_token = SecretString(v);
      secure_zero(v.data(), v.size());
      secure_zero(line.data(), line.size());
      secure_zero(t.data(), t.size());
    }
    if (c.access_key.empty() || c.secret_key.empty())
      remote::fail(FailureKind::kAuth, name_, "authentication", "no AWS credentials",
                   "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not in the server's environment and profile \"" +
                       profile + "\" of \"" + file + "\" has no keys.");
    return c;
  }

  json call(const char* op, const json& body, std::string_view kek) {
    AwsCredentials cred = credentials();
    HttpRequest rq;
    rq.url = endpoint_ + "/";
    rq.headers.push_back("Content-Type: application/x-amz-json-1.1");
    rq.headers.push_back(std::string("X-Amz-Target: TrentService.") + op);
    if (!cred.session_token.empty()) {
      SecretString h("X-Amz-Security-Token: ");
      h.append(cred.session_token.view());
      rq.secret_headers.push_back(std::move(h));
    }
    rq.aws_sigv4 = "aws:amz:" + region_ + ":kms";
    rq.userpwd = SecretString(cred.access_key.view());
    rq.userpwd.append(":");
    rq.userpwd.append(cred.secret_key.view());
    remote::set_json_body(rq, body);
    std::string type;
    HttpResult r = http_call(rq, ctx_.http, [&](const HttpResponse& resp) {
      if (resp.status == 200) return Verdict::kSuccess;
      std::string t = error_type(resp);
      if (resp.status >= 500 || t == "ThrottlingException" || t == "KMSInternalException" ||
          t == "DependencyTimeoutException" || t == "LimitExceededException")
        return Verdict::kRetry;
      return Verdict::kFail;
    });
    if (r.failure != HttpFailure::kNone) remote::fail_transport(r, name_, op);
    if (r.response.status == 200) return remote::success_object(r, name_, op);
    type = error_type(r.response);
    std::string detail = "KEK \"" + std::string(kek) + "\" in region " + region_ + " at " + endpoint_ + " (HTTP " +
                         std::to_string(r.response.status) + ", " + std::to_string(r.attempts) + " attempt(s)).";
    if (type.empty()) type = "HTTP " + std::to_string(r.response.status);
    if (type == "AccessDeniedException") remote::fail(FailureKind::kPermission, name_, op, type, detail);
    if (type == "UnrecognizedClientException" || type == "InvalidSignatureException" ||
        type == "ExpiredTokenException" || type == "IncompleteSignature" || type == "InvalidClientTokenId" ||
        type == "MissingAuthenticationToken" || type == "SignatureDoesNotMatch")
      remote::fail(FailureKind::kAuth, name_, op, type, detail);
    if (type == "NotFoundException") remote::fail(FailureKind::kNotFound, name_, op, type, detail);
    if (type == "DisabledException" || type == "KMSInvalidStateException" || type == "KeyUnavailableException")
      remote::fail(FailureKind::kDisabled, name_, op, type, detail);
    if (type == "InvalidCiphertextException" || type == "IncorrectKeyException")
      remote::fail(FailureKind::kInvalidCiphertext, name_, op, type, detail);
    if (r.response.status >= 500 || type == "ThrottlingException" || type == "KMSInternalException" ||
        type == "DependencyTimeoutException" || type == "LimitExceededException")
      remote::fail(FailureKind::kUnavailable, name_, op, type, detail);
    remote::fail(FailureKind::kBadRequest, name_, op, type, detail);
  }

  static std::string error_type(const HttpResponse& resp) {
    json e = remote::parse_body(resp);
    if (!e.is_object()) return {};
    auto it = e.find("__type");
    if (it == e.end() || !it->is_string()) return {};
    const auto& s = it->get_ref<const remote::SecureStdString&>();
    std::string t(s.data(), std::min<std::size_t>(s.size(), 100));
    if (auto hash = t.rfind('#'); hash != std::string::npos) t = t.substr(hash + 1);
    for (char ch : t)
      if (!std::isalnum(static_cast<unsigned char>(ch))) return "invalid error type";
    return t;
  }

  Bytes blob_of(const json& out, const char* op, const char* field) {
    Bytes blob;
    auto it = out.is_object() ? out.find(field) : out.end();
    const remote::SecureStdString* s = (it != out.end() && it->is_string()) ? &it->get_ref<const remote::SecureStdString&>() : nullptr;
    if (s == nullptr || !base64_decode_strict(std::string_view(s->data(), s->size()), blob) || blob.empty())
      remote::fail(FailureKind::kBadRequest, name_, op, "malformed response", std::string("The response has no ") + field + ".");
    return blob;
  }

  std::string name_;
  KmsContext ctx_;
  std::string region_, endpoint_, profile_, credentials_file_;
};

}  // namespace

std::unique_ptr<KmsProvider> make_aws_kms(const KmsConfig& cfg, const KmsContext& ctx) {
  return std::make_unique<AwsKms>(cfg, ctx);
}

}  // namespace pg_envelope
