// Bearer tokens and base URLs of the OAuth-based KMS providers (see bearer_token.hpp).
#include "bearer_token.hpp"

#include <curl/curl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cmath>

namespace pg_envelope::remote {

namespace {

using Clock = std::chrono::steady_clock;

// A token goes into an HTTP header: anything but visible ASCII would let a
// malformed token file inject header lines.
bool token_is_clean(std::string_view t) {
  return !t.empty() && std::all_of(t.begin(), t.end(), [](char c) { return c > ' ' && c < 127; });
}

// expires_in: a JSON number (GCP) or a decimal string (Azure IMDS), below 10^9
// seconds; -1 when absent or out of that range (the token then serves one call).
long expires_in_seconds(const json& out) {
  auto it = out.find("expires_in");
  if (it == out.end()) return -1;
  if (it->is_number_unsigned()) {
    auto v = it->get<std::uint64_t>();
    return v < 1000000000u ? static_cast<long>(v) : -1;
  }
  if (it->is_number_integer()) return -1;  // negative
  if (it->is_number_float()) {
    double d = it->get<double>();
    return std::isfinite(d) && d > 0 && d < 1e9 ? static_cast<long>(d) : -1;
  }
  if (it->is_string()) {
    const auto& s = it->get_ref<const SecureStdString&>();
    if (s.empty() || s.size() > 9 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return -1;
    return std::stol(std::string(s.data(), s.size()));
  }
  return -1;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

}  // namespace

BearerToken::BearerToken(std::string kms_name, std::string token_file, const char* env_var,
                         MetadataTokenSource metadata)
    : kms_(std::move(kms_name)), token_file_(std::move(token_file)), env_var_(env_var), metadata_(std::move(metadata)) {}

std::string BearerToken::describe() const {
  if (!token_file_.empty()) return "the token file \"" + token_file_ + "\"";
  std::string d = "the server's " + std::string(env_var_) + " environment variable";
  if (!metadata_.url.empty()) d += ", else the instance-metadata service at " + metadata_.url;
  return d;
}

SecretString BearerToken::get(const KmsContext& ctx) {
  SecretString token;
  std::string source;
  const char* env = ctx.getenv ? ctx.getenv(env_var_) : nullptr;
  if (!token_file_.empty()) {
    token = from_file();
    source = "the token file \"" + token_file_ + "\"";
    used_metadata_ = false;
  } else if (env != nullptr && *env != '\0') {
    token = SecretString(env);
    source = "the server's " + std::string(env_var_) + " environment variable";
    used_metadata_ = false;
  } else if (!metadata_.url.empty()) {
    token = from_metadata(ctx);
    source = "the instance-metadata service at " + metadata_.url;
    used_metadata_ = true;
  } else {
    fail(FailureKind::kAuth, kms_, "authentication", "no access token",
         "Neither the \"token_file\" option, the server's " + std::string(env_var_) + " environment variable nor the \"" +
             metadata_.option + "\" option is set.");
  }
  if (!token_is_clean(token.view()))
    fail(FailureKind::kAuth, kms_, "authentication", "malformed access token",
         "The token from " + source + " contains spaces or control characters.");
  return token;
}

bool BearerToken::invalidate() {
  if (!used_metadata_ || metadata_token_.empty()) return false;
  metadata_token_.wipe();
  return true;
}

SecretString BearerToken::from_file() {
  // As the Vault provider: re-read when the file's modification time changes, so a
  // token rotated by an agent is picked up without a reconnect.
  struct stat st;
  if (::stat(token_file_.c_str(), &st) == 0 &&
      (st.st_mtim.tv_sec != file_mtime_.tv_sec || st.st_mtim.tv_nsec != file_mtime_.tv_nsec || file_token_.empty())) {
    file_token_ = read_secret_file(token_file_, kms_, "token");
    file_mtime_ = st.st_mtim;
  } else if (file_token_.empty()) {
    file_token_ = read_secret_file(token_file_, kms_, "token");
  }
  return SecretString(file_token_.view());
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

SecretString BearerToken::from_metadata(const KmsContext& ctx) {
  Clock::time_point now = Clock::now();
  if (!metadata_token_.empty() && now < metadata_expiry_) return SecretString(metadata_token_.view());
  metadata_token_.wipe();

  HttpRequest rq;
  rq.method = "GET";
  rq.url = metadata_.url;
  rq.headers.push_back(metadata_.header);
  HttpResult r = http_call(rq, ctx.http, judge_metadata_response);
  if (r.failure != HttpFailure::kNone) fail_transport(r, kms_, "token request");
  MetadataToken got = parse_metadata_token(r.response, kms_, metadata_.url);
  metadata_token_ = std::move(got.token);
  // Cache until shortly before expiry: a minute early, or half the lifetime when
  // that is shorter. Without a lifetime the token serves this one call.
  metadata_expiry_ = now + std::chrono::seconds(token_cache_seconds(got.expires_in));
  return SecretString(metadata_token_.view());
}

bool parse_url(std::string_view url, UrlParts& out) {
  CURLU* u = curl_url();
  if (u == nullptr) throw std::bad_alloc();
  std::string s(url);
  char *scheme = nullptr, *host = nullptr, *port = nullptr, *path = nullptr;
  bool ok = curl_url_set(u, CURLUPART_URL, s.c_str(), 0) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK;
  if (ok) {
    out.scheme = lower(scheme);
    out.host = lower(host);
    out.port = port;
    out.path = path;
  }
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  curl_free(path);
  curl_url_cleanup(u);
  return ok;
}

void check_base_url(std::string_view url, const std::string& kms, const char* option, bool metadata) {
  bool clean = !url.empty() && std::all_of(url.begin(), url.end(), [](char c) {
    return c > ' ' && c < 127 && c != '?' && c != '#' && c != '@';
  });
  if (!clean)
    throw Error(sqlstate::kInvalidParameterValue, "invalid \"" + std::string(option) + "\" for KMS \"" + kms + "\"",
                "The address must be a base URL without query, fragment, user information or spaces.");
  UrlParts p;
  if (metadata && parse_url(url, p) && p.scheme == "http" &&
      (p.host == "169.254.169.254" || p.host == "metadata.google.internal"))
    return;
  check_kms_url(url, kms);
}

std::string safe_message(std::string_view text) {
  std::string out;
  bool quoted = false;
  for (char c : text) {
    if (out.size() >= 200) {
      out += "...";
      break;
    }
    if (c == '"') {
      if (!quoted) out += "\"...\"";
      quoted = !quoted;
      continue;
    }
    if (quoted) continue;
    out += (c >= ' ' && c < 127) ? c : ' ';
  }
  while (!out.empty() && (out.back() == '.' || out.back() == ' ')) out.pop_back();  // we end the sentence
  return out;
}

}  // namespace pg_envelope::remote
