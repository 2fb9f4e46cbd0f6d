// Bearer tokens of the OAuth-based KMS providers (see bearer_token.hpp).
#include "bearer_token.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <optional>

#include "aws_credentials.hpp"
#include "kms_messages.hpp"
#include "remote_kms.hpp"

namespace pg_envelope::remote {

namespace {

using Clock = std::chrono::steady_clock;

// A token goes into an HTTP header: anything but visible ASCII would let a
// malformed token file inject header lines.
bool token_is_clean(std::string_view t) {
  return !t.empty() && std::all_of(t.begin(), t.end(), [](char c) { return c > ' ' && c < 127; });
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

}  // namespace

BearerToken::BearerToken(std::string kms_name, std::string token_file, const char* env_var,
                         MetadataTokenSource metadata)
    : kms_(std::move(kms_name)),
      token_file_(std::move(token_file), kms_, "token"),
      env_var_(env_var),
      metadata_(std::move(metadata)) {}

BearerToken::BearerToken(std::string kms_name, std::string token_file, const char* env_var,
                         std::unique_ptr<OAuthTokenSource> grant, EnvGrantFactory env_grant,
                         std::string env_grant_vars, MetadataTokenSource metadata)
    : kms_(std::move(kms_name)),
      token_file_(std::move(token_file), kms_, "token"),
      env_var_(env_var),
      grant_(std::move(grant)),
      env_factory_(std::move(env_grant)),
      env_grant_vars_(std::move(env_grant_vars)),
      metadata_(std::move(metadata)) {
  // The grant's identity in the server-wide store, named before its first request (a
  // description may grow with what it reads, e.g. the service account's e-mail).
  if (grant_) grant_identity_ = "oauth grant of KMS \"" + kms_ + "\": " + grant_->describe();
}

std::string BearerToken::describe() const {
  if (!token_file_.path().empty()) return "the token file \"" + token_file_.path() + "\"";
  if (grant_) return grant_->describe();
  if (used_ == Used::kEnvGrant && env_grant_) return env_grant_->describe();
  if (used_ == Used::kMetadata) return "the instance-metadata service at " + metadata_.url;
  std::string d = "the server's " + std::string(env_var_) + " environment variable";
  if (!env_grant_vars_.empty()) d += ", else " + env_grant_vars_;
  if (!metadata_.url.empty()) d += ", else the instance-metadata service at " + metadata_.url;
  return d;
}

SecretString BearerToken::granted(const KmsContext& ctx, OAuthTokenSource& grant, const std::string& identity) {
  if (!ctx.credentials) {
    OAuthCredential c = grant.get(ctx);
    used_fresh_ = c.fresh;
    return std::move(c.token);
  }
  return shared_token(ctx, identity, [&] {
    grant.invalidate();  // this backend's own copy: the store decides when to ask again
    OAuthCredential c = grant.get(ctx);
    MetadataToken t;
    t.token = std::move(c.token);
    t.expires_in = c.expires_ms > 0 ? std::max<long>(0, static_cast<long>((c.expires_ms - steady_now_ms()) / 1000)) : -1;
    return t;
  });
}

SecretString BearerToken::shared_token(const KmsContext& ctx, std::string identity,
                                       const std::function<MetadataToken()>& fetch) {
  bool fetched_here = false;
  std::optional<SecretString> unshared;
  StoredCredential got = ctx.credentials->get(identity, [&](const SecureBytes*) {
    MetadataToken t = fetch();
    fetched_here = true;
    StoredCredential out;
    if (t.expires_in <= 0) {  // no lifetime: this one call
      out.shareable = false;
      unshared = std::move(t.token);
      return out;
    }
    std::int64_t now = aws::unix_now_us();
    out.value = SecureBytes(reinterpret_cast<const std::uint8_t*>(t.token.view().data()), t.token.view().size());
    out.expires_at_us = now + static_cast<std::int64_t>(t.expires_in) * 1000000;
    out.refresh_at_us = now + static_cast<std::int64_t>(token_cache_seconds(t.expires_in)) * 1000000;
    return out;
  });
  used_fresh_ = fetched_here;
  if (unshared) return std::move(*unshared);
  store_ = ctx.credentials;
  shared_identity_ = std::move(identity);
  shared_value_ = SecureBytes(got.value.data(), got.value.size());
  return SecretString(std::string_view(reinterpret_cast<const char*>(got.value.data()), got.value.size()));
}

SecretString BearerToken::get(const KmsContext& ctx) {
  SecretString token;
  std::string source;
  used_fresh_ = false;
  store_.reset();
  shared_identity_.clear();
  shared_value_.wipe();
  const char* env = ctx.getenv ? ctx.getenv(env_var_) : nullptr;
  if (!token_file_.path().empty()) {
    token = token_file_.get();
    source = "the token file \"" + token_file_.path() + "\"";
    used_ = Used::kStatic;
  } else if (grant_) {
    used_ = Used::kGrant;
    token = granted(ctx, *grant_, grant_identity_);
    source = grant_->describe();
  } else if (env != nullptr && *env != '\0') {
    token = SecretString(env);
    source = "the server's " + std::string(env_var_) + " environment variable";
    used_ = Used::kStatic;
  } else {
    if (!env_checked_) {
      if (env_factory_) env_grant_ = env_factory_(ctx);
      // Named before its first request (a description may grow with what it reads).
      if (env_grant_) env_grant_identity_ = "oauth grant of KMS \"" + kms_ + "\": " + env_grant_->describe();
      env_checked_ = true;
    }
    if (env_grant_) {
      used_ = Used::kEnvGrant;
      token = granted(ctx, *env_grant_, env_grant_identity_);
      source = env_grant_->describe();
    } else if (!metadata_.url.empty()) {
      token = from_metadata(ctx);
      source = "the instance-metadata service at " + metadata_.url;
      used_ = Used::kMetadata;
    } else {
      fail(FailureKind::kAuth, kms_, "authentication", "no access token",
           "Neither the \"token_file\" option, the server's " + std::string(env_var_) + " environment variable" +
               (env_grant_vars_.empty() ? "" : ", " + env_grant_vars_) + " nor the \"" + metadata_.option +
               "\" option is set.");
    }
  }
  if (!token_is_clean(token.view()))
    fail(FailureKind::kAuth, kms_, "authentication", "malformed access token",
         "The token from " + source + " contains spaces or control characters.");
  return token;
}

bool BearerToken::invalidate() {
  if (store_) {
    // From the server-wide store: a token this backend just requested is not cured by
    // another; else it is dropped there (once: another backend refused the same token
    // drops nothing new, but its next get() sees the new one).
    if (used_fresh_) return false;
    store_->invalidate(shared_identity_, shared_value_.view());
    return true;
  }
  switch (used_) {
    case Used::kMetadata:
      if (metadata_token_.empty()) return false;
      metadata_token_.wipe();
      return true;
    case Used::kGrant: return !used_fresh_ && grant_->invalidate();
    case Used::kEnvGrant: return !used_fresh_ && env_grant_->invalidate();
    default: return false;
  }
}

HttpResult BearerToken::call(HttpRequest& rq, const KmsContext& ctx,
                             const std::function<Verdict(const HttpResponse&)>& judge) {
  for (int round = 0;; ++round) {
    SecretString hdr("Authorization: Bearer ");
    hdr.append(get(ctx).view());
    rq.secret_headers.clear();
    rq.secret_headers.push_back(std::move(hdr));
    HttpResult r = http_call(rq, ctx.http, judge);
    // A cached metadata token can be revoked before it expires: fetch a new one once.
    if (round == 0 && r.failure == HttpFailure::kNone && r.response.status == 401 && invalidate()) continue;
    return r;
  }
}

Verdict judge_metadata_response(const HttpResponse& resp) {
  if (resp.status >= 200 && resp.status < 300) return Verdict::kSuccess;
  if (resp.status == 429 || resp.status >= 500) return Verdict::kRetry;
  return Verdict::kFail;
}

MetadataToken parse_metadata_token(const HttpResponse& response, const std::string& kms, const std::string& url) {
  json out = parse_body(response);
  std::string where = "The instance-metadata service at " + url;
  long status = response.status;
  if (status < 200 || status >= 300) {
    std::string why;
    if (auto it = out.is_object() ? out.find("error_description") : out.end(); it != out.end() && it->is_string()) {
      const auto& s = it->get_ref<const SecureStdString&>();
      why = ": " + safe_message(std::string_view(s.data(), s.size()));
    }
    fail(status >= 500 || status == 429 ? FailureKind::kUnavailable : FailureKind::kAuth, kms, "token request",
         "HTTP " + std::to_string(status), where + " refused to issue a token" + why + ".");
  }
  auto tok = out.is_object() ? out.find("access_token") : out.end();
  if (tok == out.end() || !tok->is_string() || tok->get_ref<const SecureStdString&>().empty())
    fail(FailureKind::kAuth, kms, "token request", "malformed response", where + " returned no access_token.");
  if (auto type = out.find("token_type"); type != out.end()) {
    bool bearer = false;
    if (type->is_string()) {
      const auto& t = type->get_ref<const SecureStdString&>();
      bearer = lower(std::string(t.data(), t.size())) == "bearer";
    }
    if (!bearer)
      fail(FailureKind::kAuth, kms, "token request", "malformed response",
           where + " returned a token that is not a bearer token.");
  }
  MetadataToken result;
  const auto& value = tok->get_ref<const SecureStdString&>();
  result.token = SecretString(std::string_view(value.data(), value.size()));
  result.expires_in = expires_in_seconds(out);
  return result;
}

long token_cache_seconds(long expires_in) noexcept {
  if (expires_in <= 0) return 0;
  if (expires_in >= 1000000000L) expires_in = 1000000000L - 1;
  return expires_in - std::min(60L, expires_in / 2);
}

MetadataToken BearerToken::request_metadata_token(const KmsContext& ctx) {
  HttpRequest rq;
  rq.method = "GET";
  rq.url = metadata_.url;
  rq.headers.push_back(metadata_.header);
  HttpResult r = http_call(rq, ctx.http, judge_metadata_response);
  if (r.failure != HttpFailure::kNone) fail_transport(r, kms_, "token request");
  return parse_metadata_token(r.response, kms_, metadata_.url);
}

SecretString BearerToken::from_metadata(const KmsContext& ctx) {
  if (ctx.credentials)
    return shared_token(ctx, "metadata token: " + metadata_.url + " (" + metadata_.header + ")",
                        [&] { return request_metadata_token(ctx); });
  Clock::time_point now = Clock::now();
  if (!metadata_token_.empty() && now < metadata_expiry_) return SecretString(metadata_token_.view());
  metadata_token_.wipe();
  MetadataToken got = request_metadata_token(ctx);
  metadata_token_ = std::move(got.token);
  // Cache until shortly before expiry: a minute early, or half the lifetime when
  // that is shorter. Without a lifetime the token serves this one call.
  metadata_expiry_ = now + std::chrono::seconds(token_cache_seconds(got.expires_in));
  return SecretString(metadata_token_.view());
}

}  // namespace pg_envelope::remote
