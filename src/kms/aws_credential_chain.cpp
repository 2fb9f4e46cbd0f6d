// The AWS credential provider chain (see aws_credential_chain.hpp).
#include "aws_credential_chain.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "credential_codec.hpp"
#include "remote_kms.hpp"
#include "secret_file.hpp"
#include "url.hpp"

namespace pg_envelope::remote::aws {

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kDefaultImds = "http://169.254.169.254";
constexpr const char* kDefaultContainerHost = "http://169.254.170.2";
constexpr long kImdsTokenTtlSeconds = 21600;

const char* env_value(const KmsContext& ctx, const char* name) {
  const char* v = ctx.getenv ? ctx.getenv(name) : nullptr;
  return (v && *v) ? v : nullptr;
}

// A header value must not carry line breaks or other control characters.
bool header_value_clean(std::string_view v) {
  return !v.empty() && std::all_of(v.begin(), v.end(), [](char c) { return c >= ' ' && c < 127; });
}

// A token file projected by Kubernetes (IRSA, EKS Pod Identity) is world-readable
// (mode 0644) by default, and the token is short-lived and audience-bound: it is read
// without the mode check of credential files, through the same wiping reader.
SecretString read_token_file(const std::string& path, const std::string& kms, const char* what) {
  SecretString text;
  struct stat st {};
  int error = 0;
  FileRead r = read_file_secret(path, text, st, error);
  if (r == FileRead::kTooLarge)
    fail(FailureKind::kAuth, kms, "authentication", std::string(what) + " is too large",
         "File \"" + path + "\" is larger than " + std::to_string(kMaxSecretFileSize) + " bytes.");
  if (r != FileRead::kOk)
    fail(FailureKind::kAuth, kms, "authentication", std::string(what) + " cannot be read",
         "File \"" + path + "\" cannot be read: " + std::strerror(error) + ".");
  SecretString token(trim_view(text.view()));
  if (!header_value_clean(token.view()))
    fail(FailureKind::kAuth, kms, "authentication", "malformed " + std::string(what),
         "File \"" + path + "\" is empty or holds control characters.");
  return token;
}

// HTTP options for the link-local metadata services: short timeouts and two attempts,
// so a server that is not on EC2 learns it quickly (the SDKs wait one second).
HttpOptions metadata_http(const KmsContext& ctx) {
  HttpOptions o = ctx.http;
  if (o.refresh) o.refresh(o);
  o.refresh = nullptr;
  o.connect_timeout_ms = std::min(o.connect_timeout_ms, 1000L);
  o.attempt_timeout_ms = std::min(o.attempt_timeout_ms, 2000L);
  o.total_budget_ms = std::min(o.total_budget_ms, 5000L);
  o.max_attempts = std::min(o.max_attempts, 2);
  return o;
}

Verdict judge_metadata(const HttpResponse& resp) {
  if (resp.status >= 200 && resp.status < 300) return Verdict::kSuccess;
  if (resp.status == 429 || resp.status >= 500) return Verdict::kRetry;
  return Verdict::kFail;
}

std::string transport_text(const HttpResult& r) {
  return r.failure_text.empty() ? "no answer" : r.failure_text;
}

// ------------------------------------------------------------------ the sources

class EnvironmentSource final : public CredentialSource {
 public:
  const char* name() const noexcept override { return "environment"; }
  std::optional<Credentials> fetch(const KmsContext& ctx, std::string& skipped) override {
    auto c = environment_credentials(ctx.getenv);
    if (!c) skipped = "the server's environment has no AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY";
    return c;
  }
};

class WebIdentitySource final : public CredentialSource {
 public:
  explicit WebIdentitySource(const ChainConfig& cfg) : cfg_(cfg) {}
  const char* name() const noexcept override { return "web identity"; }
  std::optional<Credentials> fetch(const KmsContext& ctx, std::string& skipped) override {
    const char* file = env_value(ctx, "AWS_WEB_IDENTITY_TOKEN_FILE");
    const char* role = env_value(ctx, "AWS_ROLE_ARN");
    if (!file || !role) {
      skipped = "no AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN (web identity)";
      return std::nullopt;
    }
    if (!header_value_clean(role) || std::string_view(role).find(' ') != std::string_view::npos)
      fail(FailureKind::kAuth, cfg_.kms, "authentication", "malformed AWS_ROLE_ARN",
           "The server's AWS_ROLE_ARN holds spaces or control characters.");
    const char* session = env_value(ctx, "AWS_ROLE_SESSION_NAME");
    SecretString token = read_token_file(file, cfg_.kms, "web identity token file");
    return assume_role_with_web_identity(role, session ? session : "", token, cfg_.sts_endpoint, cfg_.kms, ctx);
  }

 private:
  const ChainConfig& cfg_;
};

class SharedFileSource final : public CredentialSource {
 public:
  explicit SharedFileSource(const ChainConfig& cfg) : cfg_(cfg) {}
  const char* name() const noexcept override { return "shared credentials file"; }
  std::optional<Credentials> fetch(const KmsContext& ctx, std::string& skipped) override {
    auto c = shared_file_credentials(cfg_.kms, cfg_.credentials_file, cfg_.profile, ctx.getenv);
    if (!c) skipped = "no shared credentials file with keys (~/.aws/credentials)";
    return c;
  }

 private:
  const ChainConfig& cfg_;
};

class ContainerSource final : public CredentialSource {
 public:
  explicit ContainerSource(const ChainConfig& cfg) : cfg_(cfg) {}
  const char* name() const noexcept override { return "container"; }
  std::optional<Credentials> fetch(const KmsContext& ctx, std::string& skipped) override {
    const char* relative = env_value(ctx, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    const char* full = env_value(ctx, "AWS_CONTAINER_CREDENTIALS_FULL_URI");
    std::string url;
    if (relative) {
      std::string_view rel(relative);
      if (rel.front() != '/' || !std::all_of(rel.begin(), rel.end(), [](char c) { return c > ' ' && c < 127 && c != '#'; }))
        fail(FailureKind::kAuth, cfg_.kms, "authentication", "invalid AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
             "The server's AWS_CONTAINER_CREDENTIALS_RELATIVE_URI must be a path starting with \"/\".");
      url = (cfg_.container_endpoint.empty() ? std::string(kDefaultContainerHost) : cfg_.container_endpoint) +
            std::string(rel);
    } else if (full) {
      url = full;
      if (!container_url_allowed(url))
        fail(FailureKind::kAuth, cfg_.kms, "authentication", "AWS_CONTAINER_CREDENTIALS_FULL_URI not allowed",
             "The server's AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, or http to a loopback address, "
             "169.254.170.2, 169.254.170.23 or fd00:ec2::23.");
    } else {
      skipped = "no AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or AWS_CONTAINER_CREDENTIALS_FULL_URI (container)";
      return std::nullopt;
    }
    HttpRequest rq;
    rq.method = "GET";
    rq.url = url;
    rq.headers.push_back("Accept: application/json");
    SecretString auth;
    if (const char* file = env_value(ctx, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"))
      auth = read_token_file(file, cfg_.kms, "container authorization token file");
    else if (const char* t = env_value(ctx, "AWS_CONTAINER_AUTHORIZATION_TOKEN"))
      auth = SecretString(t);
    if (!auth.empty()) {
      if (!header_value_clean(auth.view()))
        fail(FailureKind::kAuth, cfg_.kms, "authentication", "malformed container authorization token",
             "AWS_CONTAINER_AUTHORIZATION_TOKEN holds control characters.");
      SecretString h("Authorization: ");
      h.append(auth.view());
      rq.secret_headers.push_back(std::move(h));
    }
    const char* op = "container credentials request";
    std::string where = "The container credentials endpoint at " + url;
    HttpResult r = http_call(rq, metadata_http(ctx), judge_metadata);
    if (r.failure != HttpFailure::kNone) fail_transport(r, cfg_.kms, op);
    Credentials c = parse_credentials_json(r.response, cfg_.kms, op, where);
    c.source = "the container credentials endpoint at " + url;
    return c;
  }

 private:
  const ChainConfig& cfg_;
};

class ImdsSource final : public CredentialSource {
 public:
  explicit ImdsSource(const ChainConfig& cfg) : cfg_(cfg) {}
  const char* name() const noexcept override { return "EC2 instance metadata"; }

  std::optional<Credentials> fetch(const KmsContext& ctx, std::string& skipped) override {
    if (const char* off = env_value(ctx, "AWS_EC2_METADATA_DISABLED")) {
      std::string v(off);
      std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
      if (v == "true") {
        skipped = "the EC2 instance-metadata service is disabled (AWS_EC2_METADATA_DISABLED)";
        return std::nullopt;
      }
    }
    std::string base = cfg_.ec2_metadata_endpoint;
    if (base.empty() && env_value(ctx, "AWS_EC2_METADATA_SERVICE_ENDPOINT")) {
      base = env_value(ctx, "AWS_EC2_METADATA_SERVICE_ENDPOINT");
      check_base_url(base, cfg_.kms, "AWS_EC2_METADATA_SERVICE_ENDPOINT", true);
    }
    if (base.empty()) base = kDefaultImds;
    while (!base.empty() && base.back() == '/') base.pop_back();
    HttpOptions http = metadata_http(ctx);

    // A token first (IMDSv2): without one, nothing else is asked for.
    HttpResult r;
    if (!token(ctx, base, http, r)) {
      // Nothing answers there: this server is not on EC2 (or the service is blocked).
      skipped = "the EC2 instance-metadata service at " + base + " did not answer (" + transport_text(r) + ")";
      return std::nullopt;
    }
    const char* op = "instance metadata request";
    std::string list_url = base + "/latest/meta-data/iam/security-credentials/";
    r = get(list_url, http);
    if (r.failure == HttpFailure::kNone && r.response.status == 401) {  // the token expired early: once more
      token_.wipe();
      if (!token(ctx, base, http, r)) fail_transport(r, cfg_.kms, op);
      r = get(list_url, http);
    }
    if (r.failure != HttpFailure::kNone) fail_transport(r, cfg_.kms, op);
    if (r.response.status == 404)
      fail(FailureKind::kAuth, cfg_.kms, op, "no instance profile",
           "The EC2 instance-metadata service at " + base + " lists no IAM role: attach an instance profile.");
    if (r.response.status != 200)
      fail(r.response.status >= 500 || r.response.status == 429 ? FailureKind::kUnavailable : FailureKind::kAuth,
           cfg_.kms, op, "HTTP " + std::to_string(r.response.status),
           "The EC2 instance-metadata service at " + base + " refused to list the instance's IAM role.");
    std::string role(trim_view(r.response.body.view().substr(0, r.response.body.view().find('\n'))));
    bool role_ok = !role.empty() && role.size() <= 128 && std::all_of(role.begin(), role.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || std::string_view("+=,.@_-").find(c) != std::string_view::npos;
    });
    if (!role_ok)
      fail(FailureKind::kAuth, cfg_.kms, op, "malformed response",
           "The EC2 instance-metadata service at " + base + " returned no valid IAM role name.");
    r = get(list_url + role, http);
    if (r.failure != HttpFailure::kNone) fail_transport(r, cfg_.kms, op);
    Credentials c = parse_credentials_json(r.response, cfg_.kms, op,
                                           "The EC2 instance-metadata service at " + base + " (role \"" + role + "\")");
    c.source = "the instance profile role \"" + role + "\" of the EC2 instance-metadata service at " + base;
    return c;
  }

 private:
  // Ensures token_ is set: the cached one, or a new one. False when the service did not
  // answer at all (transport failure, in `r`); an HTTP refusal is an error: an
  // IMDSv1-only service is never used.
  bool token(const KmsContext&, const std::string& base, const HttpOptions& http, HttpResult& r) {
    if (!token_.empty() && Clock::now() < token_expiry_) return true;
    token_.wipe();
    HttpRequest rq;
    rq.method = "PUT";
    rq.url = base + "/latest/api/token";
    rq.headers.push_back("X-aws-ec2-metadata-token-ttl-seconds: " + std::to_string(kImdsTokenTtlSeconds));
    r = http_call(rq, http, judge_metadata);
    if (r.failure != HttpFailure::kNone) return false;
    if (r.response.status != 200)
      fail(r.response.status >= 500 || r.response.status == 429 ? FailureKind::kUnavailable : FailureKind::kAuth,
           cfg_.kms, "instance metadata token request", "HTTP " + std::to_string(r.response.status),
           "The EC2 instance-metadata service at " + base +
               " refused an IMDSv2 session token; pg_envelope never uses IMDSv1 (requests without a token).");
    SecretString t(trim_view(r.response.body.view()));
    if (!header_value_clean(t.view()) || t.size() > 4096)
      fail(FailureKind::kAuth, cfg_.kms, "instance metadata token request", "malformed response",
           "The EC2 instance-metadata service at " + base + " returned a malformed session token.");
    token_ = std::move(t);
    // Kept a minute less than the lifetime asked for.
    token_expiry_ = Clock::now() + std::chrono::seconds(kImdsTokenTtlSeconds - 60);
    return true;
  }

  HttpResult get(const std::string& url, const HttpOptions& http) {
    HttpRequest rq;
    rq.method = "GET";
    rq.url = url;
    SecretString h("X-aws-ec2-metadata-token: ");
    h.append(token_.view());
    rq.secret_headers.push_back(std::move(h));
    return http_call(rq, http, judge_metadata);
  }

  const ChainConfig& cfg_;
  SecretString token_;
  Clock::time_point token_expiry_{};
};

}  // namespace

std::vector<std::unique_ptr<CredentialSource>> default_sources(const ChainConfig& config) {
  std::vector<std::unique_ptr<CredentialSource>> s;
  s.push_back(std::make_unique<EnvironmentSource>());
  s.push_back(std::make_unique<WebIdentitySource>(config));
  s.push_back(std::make_unique<SharedFileSource>(config));
  s.push_back(std::make_unique<ContainerSource>(config));
  s.push_back(std::make_unique<ImdsSource>(config));
  return s;
}

bool container_url_allowed(std::string_view url) {
  if (url.empty() || !std::all_of(url.begin(), url.end(), [](char c) { return c > ' ' && c < 127 && c != '@'; }))
    return false;
  UrlParts p;
  if (!parse_url(url, p)) return false;
  try {
    check_kms_url(url, "");  // https, or http to loopback
    return true;
  } catch (const Error&) {
  }
  return p.scheme == "http" && (p.host == "169.254.170.2" || p.host == "169.254.170.23" || p.host == "[fd00:ec2::23]");
}

Credentials copy_credentials(const Credentials& c) {
  Credentials out;
  out.access_key = SecretString(c.access_key.view());
  out.secret_key = SecretString(c.secret_key.view());
  out.session_token = SecretString(c.session_token.view());
  out.expires_at_us = c.expires_at_us;
  out.source = c.source;
  return out;
}

CredentialProvider::CredentialProvider(ChainConfig config)
    : config_(std::move(config)), now_(unix_now_us) {
  sources_ = default_sources(config_);  // they refer to config_, which lives as long as they do
}

CredentialProvider::CredentialProvider(ChainConfig config, std::vector<std::unique_ptr<CredentialSource>> sources,
                                       std::function<std::int64_t()> now)
    : config_(std::move(config)), sources_(std::move(sources)), now_(std::move(now)) {}

Credentials CredentialProvider::chain(const KmsContext& ctx) {
  std::string tried;
  for (auto& source : sources_) {
    std::string skipped;
    std::optional<Credentials> c = source->fetch(ctx, skipped);
    if (c) return std::move(*c);
    tried += (tried.empty() ? "" : "; ") + skipped;
  }
  fail(FailureKind::kAuth, config_.kms, "authentication", "no AWS credentials",
       "No source of the AWS credential chain is configured: " + tried + ".");
}

Credentials CredentialProvider::shared(const KmsContext& ctx, const std::string& identity,
                                       const std::function<Credentials()>& fetch, Credentials& cache,
                                       std::int64_t& refresh_at, SecureBytes& value) {
  if (!cache.access_key.empty() && now_() < refresh_at) return copy_credentials(cache);
  cache = Credentials{};
  value.wipe();
  std::optional<Credentials> unshared;
  StoredCredential got = ctx.credentials->get(identity, [&](const SecureBytes*) {
    Credentials c = fetch();
    StoredCredential out;
    if (c.expires_at_us == 0) {  // static: not shared, read again every call
      out.shareable = false;
      unshared = std::move(c);
      return out;
    }
    out.value = encode_credentials(c);
    out.expires_at_us = c.expires_at_us;
    out.refresh_at_us = credential_refresh_at_us(c.expires_at_us, now_());
    return out;
  });
  if (unshared) return std::move(*unshared);
  Credentials c;
  if (!decode_credentials(got.value.view(), c))
    fail(FailureKind::kAuth, config_.kms, "authentication", "malformed shared credentials",
         "The credentials in the server's shared credential store could not be read back.");
  cache = copy_credentials(c);
  refresh_at = got.refresh_at_us;
  value = SecureBytes(got.value.data(), got.value.size());
  return c;
}

Credentials CredentialProvider::base(const KmsContext& ctx) {
  if (ctx.credentials && !base_static_) {
    bool was_static = false;
    Credentials c = shared(
        ctx, base_identity(ctx),
        [&] {
          Credentials got = chain(ctx);
          was_static = got.expires_at_us == 0;
          return got;
        },
        base_, base_refresh_at_, base_value_);
    if (was_static) base_static_ = true;
    return c;
  }
  std::int64_t now = now_();
  if (!base_.access_key.empty() && now < base_refresh_at_) return copy_credentials(base_);
  base_ = Credentials{};
  Credentials c = chain(ctx);
  if (c.expires_at_us != 0) {  // temporary: kept until shortly before they expire
    base_ = copy_credentials(c);
    base_refresh_at_ = credential_refresh_at_us(c.expires_at_us, now);
  }
  return c;
}

Credentials CredentialProvider::get(const KmsContext& ctx) {
  if (config_.role.role_arn.empty()) return base(ctx);
  if (ctx.credentials)
    return shared(
        ctx, role_identity(ctx),
        [&] {
          Credentials b = base(ctx);
          return assume_role(config_.role, b, config_.sts_endpoint, config_.region, config_.kms, ctx);
        },
        role_, role_refresh_at_, role_value_);
  std::int64_t now = now_();
  if (!role_.access_key.empty() && now < role_refresh_at_) return copy_credentials(role_);
  role_ = Credentials{};
  Credentials b = base(ctx);
  Credentials r = assume_role(config_.role, b, config_.sts_endpoint, config_.region, config_.kms, ctx);
  role_ = copy_credentials(r);
  role_refresh_at_ = credential_refresh_at_us(r.expires_at_us, now);
  return r;
}

bool CredentialProvider::invalidate() noexcept {
  bool had = !base_.access_key.empty() || !role_.access_key.empty();
  base_ = Credentials{};
  role_ = Credentials{};
  base_refresh_at_ = role_refresh_at_ = 0;
  return had;
}

bool CredentialProvider::invalidate(const KmsContext& ctx) {
  bool had = invalidate();
  if (ctx.credentials) {
    // The role's credentials are the ones the KMS refused when there is a role; the
    // chain's are dropped too only when they were what was sent.
    if (!role_value_.empty()) {
      (void)ctx.credentials->invalidate(role_identity(ctx), role_value_.view());
    } else if (!base_value_.empty()) {
      (void)ctx.credentials->invalidate(base_identity(ctx), base_value_.view());
    }
    base_value_.wipe();
    role_value_.wipe();
  }
  return had;
}

std::string CredentialProvider::base_identity(const KmsContext& ctx) const {
  // The options and environment variables that decide which source answers and where
  // it fetches from. Static keys (AWS_ACCESS_KEY_ID, files) are never stored.
  std::string id = "aws-kms chain\n" + config_.kms + "\n" + config_.region + "\n" + config_.credentials_file + "\n" +
                   config_.profile + "\n" + config_.sts_endpoint + "\n" + config_.ec2_metadata_endpoint + "\n" +
                   config_.container_endpoint;
  for (const char* name : {"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME",
                           "AWS_SHARED_CREDENTIALS_FILE", "AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                           "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                           "AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_EC2_METADATA_DISABLED"}) {
    const char* v = env_value(ctx, name);
    id += "\n";
    id += name;
    id += "=";
    if (v) id += v;
  }
  return id;
}

std::string CredentialProvider::role_identity(const KmsContext& ctx) const {
  return base_identity(ctx) + "\naws-kms role\n" + config_.role.role_arn + "\n" + config_.role.external_id + "\n" +
         config_.role.session_name + "\n" + std::to_string(config_.role.duration_seconds);
}

SecureBytes encode_credentials(const Credentials& c) {
  return CredentialWriter(kAwsCredentialKind)
      .secret(c.access_key.view())
      .secret(c.secret_key.view())
      .secret(c.session_token.view())
      .secret(c.source)
      .integer(c.expires_at_us)
      .finish();
}

bool decode_credentials(ByteView bytes, Credentials& out) {
  CredentialReader r(bytes, kAwsCredentialKind);
  SecretString source;
  Credentials c;
  if (!r.secret(c.access_key) || !r.secret(c.secret_key) || !r.secret(c.session_token) || !r.secret(source) ||
      !r.integer(c.expires_at_us) || !r.done() || c.access_key.empty())
    return false;
  c.source = std::string(source.view());
  out = std::move(c);
  return true;
}

}  // namespace pg_envelope::remote::aws
