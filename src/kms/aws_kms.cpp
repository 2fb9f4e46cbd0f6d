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
// Credentials: the AWS credential provider chain (environment, web identity, shared
// credentials file, container endpoint, EC2 instance metadata), optionally assuming a
// role on top (options role_arn, external_id, role_session_name, duration_seconds):
// see aws_credential_chain.hpp.
#include <algorithm>
#include <cctype>

#include "aws_credential_chain.hpp"
#include "kms_responses.hpp"
#include "pg_envelope/encoding.hpp"
#include "remote_kms.hpp"
#include "url.hpp"

namespace pg_envelope {

namespace remote::aws {

namespace {

bool is_one_of(std::string_view type, std::initializer_list<std::string_view> names) {
  return std::find(names.begin(), names.end(), type) != names.end();
}

// AWS spells some of the common errors with and without "Exception" depending on the
// protocol and endpoint (MissingAuthenticationToken / MissingAuthenticationTokenException):
// both are accepted.
std::string_view without_exception_suffix(std::string_view type) {
  constexpr std::string_view kSuffix = "Exception";
  if (type.size() > kSuffix.size() && type.substr(type.size() - kSuffix.size()) == kSuffix)
    type.remove_suffix(kSuffix.size());
  return type;
}

// The request was refused because of who made it: credentials unknown, expired or
// not matching the signature.
bool authentication_type(std::string_view type) {
  return is_one_of(without_exception_suffix(type),
                   {"UnrecognizedClient", "InvalidSignature", "ExpiredToken", "IncompleteSignature",
                    "InvalidClientTokenId", "MissingAuthenticationToken", "SignatureDoesNotMatch", "RequestExpired"});
}

// The credentials were refused in a way that fresh temporary credentials may cure.
bool refetch_type(std::string_view type) {
  return is_one_of(without_exception_suffix(type), {"ExpiredToken", "UnrecognizedClient", "InvalidClientTokenId"});
}

// The requester is known but may not do this.
bool authorization_type(std::string_view type) {
  return is_one_of(without_exception_suffix(type), {"AccessDenied", "NotAuthorized"});
}

bool throttling_type(std::string_view type) {
  return is_one_of(type, {"ThrottlingException", "KMSInternalException", "DependencyTimeoutException",
                          "LimitExceededException"});
}

}  // namespace

std::string error_type(const HttpResponse& resp) {
  json e = parse_body(resp);
  if (!e.is_object()) return {};
  auto it = e.find("__type");
  if (it == e.end() || !it->is_string()) return {};
  const auto& s = it->get_ref<const SecureStdString&>();
  std::string t(s.data(), std::min<std::size_t>(s.size(), 100));
  if (auto hash = t.rfind('#'); hash != std::string::npos) t = t.substr(hash + 1);
  for (char ch : t)
    if (!std::isalnum(static_cast<unsigned char>(ch))) return "invalid error type";
  return t;
}

Verdict judge(const HttpResponse& resp) {
  if (resp.status == 200) return Verdict::kSuccess;
  if (resp.status >= 500 || throttling_type(error_type(resp))) return Verdict::kRetry;
  return Verdict::kFail;
}

json result(const HttpResult& r, const Site& site) {
  if (r.failure != HttpFailure::kNone) fail_transport(r, site.kms, site.op);
  long s = r.response.status;
  if (s == 200) return success_object(r, site.kms, site.op);
  std::string type = error_type(r.response);
  std::string detail = "KEK \"" + site.kek + "\" in region " + site.region + " at " + site.endpoint + " (HTTP " +
                       std::to_string(s) + ", " + std::to_string(r.attempts) + " attempt(s)).";
  if (!site.credentials.empty()) detail += " Credentials from " + site.credentials + ".";
  if (type.empty()) type = "HTTP " + std::to_string(s);
  if (authorization_type(type)) fail(FailureKind::kPermission, site.kms, site.op, type, detail);
  if (authentication_type(type)) fail(FailureKind::kAuth, site.kms, site.op, type, detail);
  if (type == "NotFoundException") fail(FailureKind::kNotFound, site.kms, site.op, type, detail);
  if (is_one_of(type, {"DisabledException", "KMSInvalidStateException", "KeyUnavailableException"}))
    fail(FailureKind::kDisabled, site.kms, site.op, type, detail);
  if (is_one_of(type, {"InvalidCiphertextException", "IncorrectKeyException"}))
    fail(FailureKind::kInvalidCiphertext, site.kms, site.op, type, detail);
  if (s >= 500 || throttling_type(type)) fail(FailureKind::kUnavailable, site.kms, site.op, type, detail);
  // No type, or one not listed above: the status says what it can.
  if (s == 401) fail(FailureKind::kAuth, site.kms, site.op, type, detail);
  if (s == 403) fail(FailureKind::kPermission, site.kms, site.op, type, detail);
  fail(FailureKind::kBadRequest, site.kms, site.op, type, detail);
}

Bytes ciphertext_blob(const json& out, const std::string& kms, const std::string& op) {
  Bytes blob;
  auto it = out.is_object() ? out.find("CiphertextBlob") : out.end();
  const SecureStdString* s = (it != out.end() && it->is_string()) ? &it->get_ref<const SecureStdString&>() : nullptr;
  if (s == nullptr || !base64_decode_strict(std::string_view(s->data(), s->size()), blob) || blob.empty())
    fail(FailureKind::kBadRequest, kms, op, "malformed response", "The response has no CiphertextBlob.");
  return blob;
}

SecureBytes plaintext(const json& out, const std::string& kms) {
  SecureBytes payload;
  auto it = out.is_object() ? out.find("Plaintext") : out.end();
  if (it == out.end() || !it->is_string() ||
      !base64_decode_secret(std::string_view(it->get_ref<const SecureStdString&>()), payload))
    fail(FailureKind::kBadRequest, kms, "Decrypt", "malformed response", "The response has no Plaintext.");
  return payload;
}

std::string describe_key_arn(const json& out, const std::string& kms) {
  auto md = out.is_object() ? out.find("KeyMetadata") : out.end();
  if (md != out.end() && md->is_object())
    if (auto it = md->find("Arn"); it != md->end() && it->is_string()) {
      const auto& s = it->get_ref<const SecureStdString&>();
      if (s.rfind("arn:", 0) == 0 && s.size() <= 2048) return std::string(s.data(), s.size());
    }
  fail(FailureKind::kBadRequest, kms, "DescribeKey", "malformed response", "The response has no KeyMetadata.Arn.");
}

std::string key_rotations_page(const json& out, const std::string& kms, std::uint64_t& count, std::int64_t& latest) {
  auto bad = [&kms](const char* what) {
    fail(FailureKind::kBadRequest, kms, "ListKeyRotations", "malformed response", what);
  };
  auto rot = out.is_object() ? out.find("Rotations") : out.end();
  if (rot == out.end() || !rot->is_array()) bad("The response has no Rotations.");
  for (const auto& r : *rot) {
    auto d = r.is_object() ? r.find("RotationDate") : r.end();
    // Seconds since 1970 (a JSON number, may have a fraction); beyond year 5000 is nonsense.
    if (d == r.end() || !d->is_number() || !(d->get<double>() >= 0.0 && d->get<double>() < 1e11))
      bad("A rotation has no valid RotationDate.");
    latest = std::max(latest, static_cast<std::int64_t>(d->get<double>() * 1e6));
    ++count;
  }
  auto t = out.find("Truncated");
  if (t == out.end() || !t->is_boolean() || !t->get<bool>()) return {};
  auto m = out.find("NextMarker");
  if (m == out.end() || !m->is_string() || m->get_ref<const SecureStdString&>().empty() ||
      m->get_ref<const SecureStdString&>().size() > 1024)
    bad("A truncated response has no NextMarker.");
  const auto& ms = m->get_ref<const SecureStdString&>();
  return std::string(ms.data(), ms.size());
}

}  // namespace remote::aws

namespace {

using remote::FailureKind;
using remote::json;

class AwsKms final : public KmsProvider {
 public:
  AwsKms(const KmsConfig& cfg, const KmsContext& ctx) : name_(cfg.name), ctx_(ctx), creds_(chain_config(cfg, ctx_)) {}

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
    body["Plaintext"] = std::string_view(base64_encode_secret(payload.view()).view());
    body["EncryptionContext"] = context(b);
    return remote::aws::ciphertext_blob(call("Encrypt", body, kek), name_, "Encrypt");
  }

  SecureBytes unwrap(std::string_view kek, const DekBinding& b, ByteView wrapped) override {
    validate_kek(kek);
    json body;
    body["KeyId"] = std::string(kek);
    body["CiphertextBlob"] = base64_encode(wrapped);
    body["EncryptionContext"] = context(b);
    json out = call("Decrypt", body, kek);
    SecureBytes payload = remote::aws::plaintext(out, name_);
    return remote::unbind_dek(payload.view(), b, name_);
  }

  Bytes rewrap(std::string_view old_kek, std::string_view new_kek, const DekBinding& b, ByteView wrapped) override {
    validate_kek(old_kek);
    validate_kek(new_kek);
    json body;
    body["CiphertextBlob"] = base64_encode(wrapped);
    body["SourceKeyId"] = std::string(old_kek);
    body["SourceEncryptionContext"] = context(b);
    body["DestinationKeyId"] = std::string(new_kek);
    body["DestinationEncryptionContext"] = context(b);
    return remote::aws::ciphertext_blob(call("ReEncrypt", body, new_kek), name_, "ReEncrypt");
  }

  // KMS rotates a key's backing material in place (automatically or on demand) and
  // never says which one a ciphertext uses: the current version is 1 + the number of
  // rotations, created at the newest RotationDate (kms:DescribeKey to resolve an
  // alias, which ListKeyRotations does not take, and kms:ListKeyRotations).
  std::optional<KekVersion> current_kek_version(std::string_view kek) override {
    validate_kek(kek);
    json body;
    body["KeyId"] = std::string(kek);
    std::string arn = remote::aws::describe_key_arn(call("DescribeKey", body, kek), name_);
    std::uint64_t count = 0;
    std::int64_t latest = 0;
    std::string marker;
    for (int page = 0; page < 1000; ++page) {
      json list;
      list["KeyId"] = arn;
      list["Limit"] = 1000;
      if (!marker.empty()) list["Marker"] = marker;
      marker = remote::aws::key_rotations_page(call("ListKeyRotations", list, kek), name_, count, latest);
      if (marker.empty()) break;
    }
    KekVersion v;
    v.version = std::to_string(count + 1);
    v.since_us = count == 0 ? 0 : latest;
    return v;
  }

 private:
  static json context(const DekBinding& b) {
    json c;
    c["pg_envelope:key"] = b.key_name;
    c["pg_envelope:key_id"] = std::to_string(b.key_id);
    c["pg_envelope:version"] = std::to_string(b.version);
    return c;
  }

  // Reads and checks the options (the constructor's work: creds_ is built from them).
  remote::aws::ChainConfig chain_config(const KmsConfig& cfg, KmsContext& ctx) {
    remote::Options o(cfg);
    remote::aws::ChainConfig c;
    c.kms = name_;
    region_ = o.required_string("region");
    c.region = region_;
    endpoint_ = o.string_or("endpoint", "https://kms." + region_ + ".amazonaws.com");
    c.profile = o.string_or("profile", "");
    c.credentials_file = o.string_or("credentials_file", "");
    c.sts_endpoint = o.string_or("sts_endpoint", "");
    c.ec2_metadata_endpoint = o.string_or("ec2_metadata_endpoint", "");
    c.container_endpoint = o.string_or("container_endpoint", "");
    c.role.role_arn = o.string_or("role_arn", "");
    c.role.external_id = o.string_or("external_id", "");
    c.role.session_name = o.string_or("role_session_name", "");
    c.role.duration_seconds = o.integer_or("duration_seconds", 0, 900, 43200);
    o.apply_ca_file(ctx.http);
    o.finish();
    for (char ch : region_)
      if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-'))
        throw Error(sqlstate::kInvalidParameterValue, "invalid \"region\" for KMS \"" + name_ + "\"");
    auto trim_slashes = [](std::string& u) {
      while (!u.empty() && u.back() == '/') u.pop_back();
    };
    trim_slashes(endpoint_);
    check_kms_url(endpoint_, name_, "endpoint");
    if (c.sts_endpoint.empty()) c.sts_endpoint = remote::aws::default_sts_endpoint(region_);
    trim_slashes(c.sts_endpoint);
    remote::check_base_url(c.sts_endpoint, name_, "sts_endpoint");
    if (!c.ec2_metadata_endpoint.empty()) {
      trim_slashes(c.ec2_metadata_endpoint);
      remote::check_base_url(c.ec2_metadata_endpoint, name_, "ec2_metadata_endpoint", true);
    }
    if (!c.container_endpoint.empty()) {
      trim_slashes(c.container_endpoint);
      remote::UrlParts p;
      if (!remote::aws::container_url_allowed(c.container_endpoint) || !remote::parse_url(c.container_endpoint, p) ||
          !(p.path.empty() || p.path == "/") || c.container_endpoint.find('?') != std::string::npos)
        throw Error(sqlstate::kInvalidParameterValue, "invalid \"container_endpoint\" for KMS \"" + name_ + "\"",
                    "The container credentials endpoint is a base URL (scheme, host, port): https, or http to a "
                    "loopback address or 169.254.170.2.");
    }
    remote::aws::validate_role_config(c.role, name_);
    return c;
  }

  json call(const char* op, const json& body, std::string_view kek) {
    for (int round = 0;; ++round) {
      remote::aws::Credentials cred = creds_.get(ctx_);
      HttpResult r = send(op, body, cred);
      // Temporary credentials can expire or be revoked before their time: fetch fresh
      // ones once.
      if (round == 0 && r.failure == HttpFailure::kNone && (r.response.status == 400 || r.response.status == 403) &&
          remote::aws::refetch_type(remote::aws::error_type(r.response)) && creds_.invalidate(ctx_))
        continue;
      return remote::aws::result(r, {name_, op, std::string(kek), region_, endpoint_, cred.source});
    }
  }

  HttpResult send(const char* op, const json& body, const remote::aws::Credentials& cred) {
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
    return http_call(rq, ctx_.http, remote::aws::judge);
  }

  std::string name_;
  KmsContext ctx_;
  std::string region_, endpoint_;
  remote::aws::CredentialProvider creds_;
};

}  // namespace

std::unique_ptr<KmsProvider> make_aws_kms(const KmsConfig& cfg, const KmsContext& ctx) {
  return std::make_unique<AwsKms>(cfg, ctx);
}

}  // namespace pg_envelope
