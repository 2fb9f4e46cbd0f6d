// OAuth 2.0 token requests and their per-backend cache (see oauth_token.hpp).
#include "oauth_token.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>

#include "kms_messages.hpp"
#include "remote_kms.hpp"
#include "url.hpp"

namespace pg_envelope::remote {

namespace {

bool visible_ascii(std::string_view t) {
  return !t.empty() && std::all_of(t.begin(), t.end(), [](char c) { return c > ' ' && c < 127; });
}

std::string_view string_of(const json& obj, const char* name) {
  auto it = obj.is_object() ? obj.find(name) : obj.end();
  if (it == obj.end() || !it->is_string()) return {};
  const auto& s = it->get_ref<const SecureStdString&>();
  return {s.data(), s.size()};
}

// The service's error code: a short token of letters, digits and _ . - only.
std::string error_code(const json& out) {
  std::string_view e = string_of(out, "error");
  if (e.empty() || e.size() > 64 ||
      !std::all_of(e.begin(), e.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.'; }))
    return {};
  return std::string(e);
}

}  // namespace

std::int64_t steady_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::int64_t unix_now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void form_append(SecretString& body, std::string_view name, std::string_view value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  auto put = [&body](std::string_view text) {
    for (char c : text) {
      unsigned char u = static_cast<unsigned char>(c);
      if (std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~') {
        body.push_back(c);
      } else {
        char esc[3] = {'%', kHex[u >> 4], kHex[u & 15]};
        body.append(esc, 3);
      }
    }
  };
  if (!body.empty()) body.push_back('&');
  put(name);
  body.push_back('=');
  put(value);
}

long expires_in_seconds(const json& out) {
  auto it = out.is_object() ? out.find("expires_in") : out.end();
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

void check_credential_url(const std::string& url, const std::string& kms, const std::string& what, bool base) {
  try {
    if (base)
      check_base_url(url, kms, "authority_url");
    else
      check_kms_url(url, kms);
  } catch (const Error& e) {
    throw Error(e.sqlstate(), "invalid token endpoint for KMS \"" + kms + "\"",
                what + " is \"" + safe_message(url) + "\": " + e.detail(),
                "Use an https:// base URL, e.g. https://login.microsoftonline.com or https://oauth2.googleapis.com/token.");
  }
}

Verdict judge_token_response(const HttpResponse& resp) {
  if (resp.status >= 200 && resp.status < 300) return Verdict::kSuccess;
  if (resp.status == 429 || resp.status == 500 || resp.status == 502 || resp.status == 503 || resp.status == 504)
    return Verdict::kRetry;
  return Verdict::kFail;
}

TokenResponse parse_token_response(const HttpResult& r, const std::string& kms, const std::string& where,
                                   std::initializer_list<std::string_view> withhold) {
  if (r.failure != HttpFailure::kNone) {
    try {
      fail_transport(r, kms, "token request");
    } catch (const Error& e) {  // the same error, naming the endpoint that could not be reached
      throw Error(e.sqlstate(), e.what(), e.detail() + (e.detail().empty() ? "" : " ") + where + ".", e.hint());
    }
  }
  json out = parse_body(r.response);
  long s = r.response.status;
  if (s < 200 || s >= 300) {
    std::string code = error_code(out);
    std::string_view raw = string_of(out, "error_description");
    std::string why;
    if (!raw.empty()) {
      bool quotes = std::any_of(withhold.begin(), withhold.end(),
                                [&](std::string_view x) { return x.size() >= 4 && raw.find(x) != std::string_view::npos; });
      why = quotes ? "(the description is withheld: it quotes the credential)" : safe_message(raw);
    }
    fail(s == 429 || s >= 500 ? FailureKind::kUnavailable : FailureKind::kAuth, kms, "token request",
         "HTTP " + std::to_string(s) + (code.empty() ? "" : " " + code),
         where + " refused to issue a token" + (why.empty() ? "" : ": " + why) + ".");
  }
  auto malformed = [&](const std::string& why) {
    fail(FailureKind::kAuth, kms, "token request", "malformed response", where + " answered " + why + ".");
  };
  if (!out.is_object()) malformed("with something that is not a JSON object");
  std::string_view tok = string_of(out, "access_token");
  if (!visible_ascii(tok)) malformed("without an access_token of visible ASCII characters");
  if (auto type = out.find("token_type"); type != out.end()) {
    std::string t;
    if (type->is_string()) t = std::string(string_of(out, "token_type"));
    std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
    if (t != "bearer") malformed("with a token that is not a bearer token");
  }
  TokenResponse result;
  result.access_token = SecretString(tok);
  result.expires_in = expires_in_seconds(out);
  return result;
}

CachedGrantSource::CachedGrantSource(std::string kms, std::function<std::int64_t()> now_ms)
    : kms_(std::move(kms)), now_(now_ms ? std::move(now_ms) : std::function<std::int64_t()>(steady_now_ms)) {}

OAuthCredential CachedGrantSource::get(const KmsContext& ctx) {
  OAuthCredential c;
  std::int64_t now = now_();
  if (token_.empty() || now >= use_until_ms_) {
    token_.wipe();
    ++requests_;
    TokenResponse got = request_token(ctx);
    token_ = std::move(got.access_token);
    // Kept until a minute before expiry (or half a short lifetime); without a
    // lifetime the token serves this one call.
    use_until_ms_ = now + static_cast<std::int64_t>(token_cache_seconds(got.expires_in)) * 1000;
    expires_ms_ = got.expires_in > 0 ? now + static_cast<std::int64_t>(got.expires_in) * 1000 : 0;
    c.fresh = true;
  }
  c.token = SecretString(token_.view());
  c.expires_ms = expires_ms_;
  return c;
}

bool CachedGrantSource::invalidate() {
  if (token_.empty()) return false;
  token_.wipe();
  return true;
}

}  // namespace pg_envelope::remote
