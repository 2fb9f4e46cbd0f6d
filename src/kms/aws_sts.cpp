// AWS STS: AssumeRole, AssumeRoleWithWebIdentity and their XML (see aws_sts.hpp).
#include "aws_sts.hpp"

#include <unistd.h>

#include <algorithm>
#include <regex>
#include <vector>

#include "kms_messages.hpp"
#include "remote_kms.hpp"
#include "secret_file.hpp"
#include "secure_json.hpp"

namespace pg_envelope::remote::aws {

namespace {

constexpr std::size_t kMaxXmlDepth = 64;

std::string_view local_name(std::string_view qname) {
  std::size_t colon = qname.rfind(':');
  return colon == std::string_view::npos ? qname : qname.substr(colon + 1);
}

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
         c == '.' || c == ':' || static_cast<unsigned char>(c) >= 0x80;
}

bool xml_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// Character data with its references decoded, appended to `out`; false when a
// reference is malformed or names no predefined entity.
bool decode_text(std::string_view text, SecretString& out) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '>' && i >= 2 && text.substr(i - 2, 3) == "]]>") return false;
    if (c != '&') {
      out.push_back(c);
      continue;
    }
    std::size_t semi = text.find(';', i + 1);
    if (semi == std::string_view::npos || semi - i > 12) return false;
    std::string_view ref = text.substr(i + 1, semi - i - 1);
    i = semi;
    if (ref == "lt") out.push_back('<');
    else if (ref == "gt") out.push_back('>');
    else if (ref == "amp") out.push_back('&');
    else if (ref == "quot") out.push_back('"');
    else if (ref == "apos") out.push_back('\'');
    else if (ref.size() >= 2 && ref[0] == '#') {
      bool hex = ref[1] == 'x';
      std::string_view digits = ref.substr(hex ? 2 : 1);
      if (digits.empty()) return false;
      unsigned long cp = 0;
      for (char d : digits) {
        int v = (d >= '0' && d <= '9')           ? d - '0'
                : (hex && d >= 'a' && d <= 'f') ? d - 'a' + 10
                : (hex && d >= 'A' && d <= 'F') ? d - 'A' + 10
                                                : -1;
        if (v < 0) return false;
        cp = cp * (hex ? 16 : 10) + static_cast<unsigned long>(v);
        if (cp > 0x10FFFF) return false;
      }
      if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
      append_utf8(out, cp);
    } else {
      return false;
    }
  }
  return true;
}

std::string text_of(std::string_view xml, std::initializer_list<std::string_view> path) {
  SecretString s;
  if (!xml_text(xml, path, s)) return {};
  return std::string(s.view());
}

// An error code is a word: anything else is not shown.
std::string clean_code(std::string code) {
  if (code.size() > 100) return {};
  for (char c : code)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_'))
      return {};
  return code;
}

bool all_of_set(std::string_view s, std::string_view extra) {
  return std::all_of(s.begin(), s.end(), [&](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           extra.find(c) != std::string_view::npos;
  });
}

Credentials sts_call(HttpRequest& rq, std::string_view action, const std::string& kms, const std::string& what,
                     const KmsContext& ctx) {
  rq.url += "/";
  rq.headers.push_back("Content-Type: application/x-www-form-urlencoded; charset=utf-8");
  rq.headers.push_back("Accept: text/xml");
  HttpResult r = http_call(rq, ctx.http, judge_sts_response);
  if (r.failure != HttpFailure::kNone) fail_transport(r, kms, std::string(action));
  return parse_sts_response(r.response, action, kms, what);
}

bool scan_xml(std::string_view xml, std::initializer_list<std::string_view> path, SecretString& out) {
  std::vector<std::string_view> want(path);
  std::vector<std::string_view> stack;  // qualified names of the open elements
  SecretString scratch;
  bool found = false, capturing = false, seen_root = false;
  std::size_t i = 0, n = xml.size();
  if (xml.substr(0, 3) == "\xEF\xBB\xBF") i = 3;
  while (i < n) {
    if (xml[i] != '<') {
      std::size_t lt = std::min(xml.find('<', i), n);
      std::string_view text = xml.substr(i, lt - i);
      i = lt;
      if (stack.empty()) {
        if (!std::all_of(text.begin(), text.end(), xml_space)) return false;
        continue;
      }
      if (capturing && stack.size() == want.size()) {
        if (!decode_text(text, out)) return false;
      } else {
        scratch.wipe();
        if (!decode_text(text, scratch)) return false;
      }
      continue;
    }
    std::string_view rest = xml.substr(i);
    auto skip_past = [&](std::string_view end, std::size_t from) {
      std::size_t e = xml.find(end, from);
      if (e == std::string_view::npos) return false;
      i = e + end.size();
      return true;
    };
    if (rest.substr(0, 2) == "<?") {
      if (!skip_past("?>", i + 2)) return false;
      continue;
    }
    if (rest.substr(0, 4) == "<!--") {
      if (!skip_past("-->", i + 4)) return false;
      continue;
    }
    if (rest.substr(0, 9) == "<![CDATA[") {
      if (stack.empty()) return false;
      std::size_t start = i + 9;
      if (!skip_past("]]>", start)) return false;
      if (capturing && stack.size() == want.size()) out.append(xml.substr(start, i - 3 - start));
      continue;
    }
    if (rest.substr(0, 2) == "<!") return false;  // DOCTYPE and the like
    bool closing = rest.substr(0, 2) == "</";
    std::size_t p = i + (closing ? 2 : 1);
    std::size_t name_start = p;
    while (p < n && name_char(xml[p])) ++p;
    std::string_view name = xml.substr(name_start, p - name_start);
    if (name.empty()) return false;
    if (closing) {
      while (p < n && xml_space(xml[p])) ++p;
      if (p >= n || xml[p] != '>' || stack.empty() || stack.back() != name) return false;
      if (capturing && stack.size() == want.size()) {
        capturing = false;
        found = true;
      }
      stack.pop_back();
      i = p + 1;
      continue;
    }
    // Attributes are skipped, honouring quotes; "/>" closes the element at once.
    char quote = 0;
    bool self_closing = false;
    for (;; ++p) {
      if (p >= n) return false;
      char c = xml[p];
      if (quote) {
        if (c == quote) quote = 0;
        else if (c == '<') return false;
        continue;
      }
      if (c == '"' || c == '\'') quote = c;
      else if (c == '<') return false;
      else if (c == '>') {
        self_closing = xml[p - 1] == '/';
        break;
      }
    }
    i = p + 1;
    if (stack.empty() && seen_root) return false;  // a second root element
    if (stack.size() >= kMaxXmlDepth) return false;
    seen_root = true;
    stack.push_back(name);
    if (!found && !capturing && stack.size() == want.size()) {
      bool match = true;
      for (std::size_t k = 0; k < want.size() && match; ++k) match = local_name(stack[k]) == want[k];
      if (match) {
        if (self_closing) found = true;
        else capturing = true;
      }
    }
    if (self_closing) stack.pop_back();
  }
  return stack.empty() && seen_root && found;
}

}  // namespace

bool xml_text(std::string_view xml, std::initializer_list<std::string_view> path, SecretString& out) {
  out.wipe();
  if (scan_xml(xml, path, out)) return true;
  out.wipe();  // also what was read before the document turned out malformed
  return false;
}

void append_form_value(SecretString& out, std::string_view value) {
  static const char kHex[] = "0123456789ABCDEF";
  for (char c : value) {
    auto u = static_cast<unsigned char>(c);
    if ((u >= 'A' && u <= 'Z') || (u >= 'a' && u <= 'z') || (u >= '0' && u <= '9') || u == '-' || u == '_' ||
        u == '.' || u == '~') {
      out.push_back(c);
    } else {
      char e[3] = {'%', kHex[u >> 4], kHex[u & 15]};
      out.append(e, 3);
    }
  }
}

std::string default_sts_endpoint(const std::string& region) {
  return "https://sts." + region + (region.rfind("cn-", 0) == 0 ? ".amazonaws.com.cn" : ".amazonaws.com");
}

Verdict judge_sts_response(const HttpResponse& resp) {
  if (resp.status >= 200 && resp.status < 300) return Verdict::kSuccess;
  if (resp.status == 429 || resp.status >= 500) return Verdict::kRetry;
  std::string code = text_of(resp.body.view(), {"ErrorResponse", "Error", "Code"});
  if (code == "Throttling" || code == "ThrottlingException" || code == "RequestLimitExceeded") return Verdict::kRetry;
  return Verdict::kFail;
}

Credentials parse_sts_response(const HttpResponse& response, std::string_view action, const std::string& kms,
                               const std::string& what) {
  std::string_view xml = response.body.view();
  long status = response.status;
  std::string op(action);
  if (status < 200 || status >= 300) {
    std::string code = clean_code(text_of(xml, {"ErrorResponse", "Error", "Code"}));
    std::string message = text_of(xml, {"ErrorResponse", "Error", "Message"});
    std::string detail = "STS refused " + op + " for " + what + " (HTTP " + std::to_string(status) + ")";
    if (!message.empty()) detail += ": " + safe_message(message);
    bool busy = status == 429 || status >= 500 || code == "Throttling" || code == "ThrottlingException" ||
                code == "RequestLimitExceeded";
    fail(busy ? FailureKind::kUnavailable : FailureKind::kAuth, kms, op,
         code.empty() ? "HTTP " + std::to_string(status) : code, detail + ".");
  }
  std::string response_name = op + "Response", result_name = op + "Result";
  Credentials c;
  SecretString expiration;
  bool ok = xml_text(xml, {response_name, result_name, "Credentials", "AccessKeyId"}, c.access_key) &&
            xml_text(xml, {response_name, result_name, "Credentials", "SecretAccessKey"}, c.secret_key) &&
            xml_text(xml, {response_name, result_name, "Credentials", "SessionToken"}, c.session_token) &&
            xml_text(xml, {response_name, result_name, "Credentials", "Expiration"}, expiration);
  if (!ok)
    fail(FailureKind::kAuth, kms, op, "malformed response",
         "STS answered " + op + " for " + what + " without AccessKeyId, SecretAccessKey, SessionToken and Expiration.");
  if (!credentials_well_formed(c) || c.session_token.empty())
    fail(FailureKind::kAuth, kms, op, "malformed response",
         "STS answered " + op + " for " + what + " with malformed credentials.");
  if (!parse_rfc3339(trim_view(expiration.view()), c.expires_at_us) || c.expires_at_us <= 0)
    fail(FailureKind::kAuth, kms, op, "malformed response",
         "STS answered " + op + " for " + what + " with an invalid Expiration.");
  return c;
}

void validate_role_config(const RoleConfig& role, const std::string& kms) {
  auto bad = [&](const char* option, const std::string& detail) {
    throw Error(sqlstate::kInvalidParameterValue, "invalid \"" + std::string(option) + "\" for KMS \"" + kms + "\"",
                detail);
  };
  if (role.role_arn.empty()) {
    if (!role.external_id.empty() || !role.session_name.empty() || role.duration_seconds != 0)
      throw Error(sqlstate::kInvalidParameterValue,
                  "options \"external_id\", \"role_session_name\" and \"duration_seconds\" of KMS \"" + kms +
                      "\" need \"role_arn\"",
                  "They describe the role to assume; without \"role_arn\" no role is assumed.");
    return;
  }
  // arn:<partition>:iam::<account>:role/<path/>name
  static const std::regex kRoleArn("arn:[a-z][a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]*[A-Za-z0-9+=,.@_-]");
  bool ok = role.role_arn.size() <= 2048 && std::regex_match(role.role_arn, kRoleArn);
  if (!ok)
    bad("role_arn", "A role ARN looks like arn:aws:iam::123456789012:role/name (path allowed).");
  if (!role.external_id.empty() &&
      (role.external_id.size() < 2 || role.external_id.size() > 1224 || !all_of_set(role.external_id, "+=,.@:/-")))
    bad("external_id", "An external id is 2 to 1224 characters: letters, digits and +=,.@:/-");
  if (!role.session_name.empty() &&
      (role.session_name.size() < 2 || role.session_name.size() > 64 || !all_of_set(role.session_name, "+=,.@_-")))
    bad("role_session_name", "A role session name is 2 to 64 characters: letters, digits and +=,.@_-");
  if (role.duration_seconds != 0 && (role.duration_seconds < 900 || role.duration_seconds > 43200))
    bad("duration_seconds", "STS issues role credentials for 900 to 43200 seconds.");
}

std::string session_name_or_default(const std::string& configured) {
  return configured.empty() ? "pg_envelope-" + std::to_string(static_cast<long>(::getpid())) : configured;
}

Credentials assume_role(const RoleConfig& role, const Credentials& base, const std::string& endpoint,
                        const std::string& region, const std::string& kms, const KmsContext& ctx) {
  HttpRequest rq;
  rq.url = endpoint;
  rq.body = SecretString("Action=AssumeRole&Version=2011-06-15&RoleArn=");
  append_form_value(rq.body, role.role_arn);
  rq.body.append("&RoleSessionName=");
  append_form_value(rq.body, session_name_or_default(role.session_name));
  if (!role.external_id.empty()) {
    rq.body.append("&ExternalId=");
    append_form_value(rq.body, role.external_id);
  }
  if (role.duration_seconds != 0) rq.body.append("&DurationSeconds=" + std::to_string(role.duration_seconds));
  if (!base.session_token.empty()) {
    SecretString h("X-Amz-Security-Token: ");
    h.append(base.session_token.view());
    rq.secret_headers.push_back(std::move(h));
  }
  rq.aws_sigv4 = "aws:amz:" + region + ":sts";
  rq.userpwd = SecretString(base.access_key.view());
  rq.userpwd.append(":");
  rq.userpwd.append(base.secret_key.view());
  std::string what = "role \"" + role.role_arn + "\" at " + endpoint;
  Credentials c = sts_call(rq, "AssumeRole", kms, what, ctx);
  c.source = "role \"" + role.role_arn + "\" assumed through STS at " + endpoint + " with credentials from " +
             base.source;
  return c;
}

Credentials assume_role_with_web_identity(const std::string& role_arn, const std::string& session_name,
                                          const SecretString& web_identity_token, const std::string& endpoint,
                                          const std::string& kms, const KmsContext& ctx) {
  HttpRequest rq;
  rq.url = endpoint;
  rq.body = SecretString("Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=");
  append_form_value(rq.body, role_arn);
  rq.body.append("&RoleSessionName=");
  append_form_value(rq.body, session_name_or_default(session_name));
  rq.body.append("&WebIdentityToken=");
  append_form_value(rq.body, web_identity_token.view());
  std::string what = "role \"" + role_arn + "\" at " + endpoint;
  Credentials c = sts_call(rq, "AssumeRoleWithWebIdentity", kms, what, ctx);
  c.source = "web identity role \"" + role_arn + "\" (STS at " + endpoint + ")";
  return c;
}

}  // namespace pg_envelope::remote::aws
