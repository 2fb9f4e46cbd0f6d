// AWS credentials: the static sources and the pure parts of the temporary ones (see
// aws_credentials.hpp).
#include "aws_credentials.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>

#include "kms_messages.hpp"
#include "pg_envelope/kms.hpp"
#include "remote_kms.hpp"
#include "secret_file.hpp"

namespace pg_envelope::remote::aws {

namespace {

const char* env_value(const GetEnv& getenv, const char* name) {
  const char* v = getenv ? getenv(name) : nullptr;
  return (v && *v) ? v : nullptr;
}

bool visible_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c > ' ' && c < 127 && c != '"' && c != '\\'; });
}

// The string member `name` of a JSON object, or nullptr.
const SecureStdString* string_member(const json& obj, const char* name) {
  auto it = obj.find(name);
  if (it == obj.end() || !it->is_string()) return nullptr;
  return &it->get_ref<const SecureStdString&>();
}

}  // namespace

Credentials parse_credentials_file(std::string_view text, std::string_view profile) {
  Credentials c;
  std::string_view section;
  bool in_section = false;  // in a section named `profile`
  while (!text.empty()) {
    std::size_t nl = text.find('\n');
    std::string_view line = trim_view(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[' && line.back() == ']' && line.size() >= 2) {
      section = trim_view(line.substr(1, line.size() - 2));
      in_section = section == profile;
      continue;
    }
    if (!in_section) continue;
    std::size_t eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view key = trim_view(line.substr(0, eq));
    std::string_view value = trim_view(line.substr(eq + 1));
    if (key == "aws_access_key_id") c.access_key = SecretString(value);
    if (key == "aws_secret_access_key") c.secret_key = SecretString(value);
    if (key == "aws_session_token") c.session_token = SecretString(value);
  }
  return c;
}

std::optional<Credentials> environment_credentials(const GetEnv& getenv) {
  const char* id = env_value(getenv, "AWS_ACCESS_KEY_ID");
  const char* secret = env_value(getenv, "AWS_SECRET_ACCESS_KEY");
  if (!id || !secret) return std::nullopt;
  Credentials c;
  c.access_key = SecretString(id);
  c.secret_key = SecretString(secret);
  if (const char* t = env_value(getenv, "AWS_SESSION_TOKEN")) c.session_token = SecretString(t);
  c.source = "the server's environment (AWS_ACCESS_KEY_ID)";
  return c;
}

std::optional<Credentials> shared_file_credentials(const std::string& kms, const std::string& file_option,
                                                   const std::string& profile_option, const GetEnv& getenv) {
  std::string file = file_option;
  if (file.empty() && env_value(getenv, "AWS_SHARED_CREDENTIALS_FILE")) file = env_value(getenv, "AWS_SHARED_CREDENTIALS_FILE");
  bool configured = !file.empty();
  if (file.empty() && env_value(getenv, "HOME")) file = std::string(env_value(getenv, "HOME")) + "/.aws/credentials";
  std::string profile = !profile_option.empty() ? profile_option
                        : env_value(getenv, "AWS_PROFILE") ? env_value(getenv, "AWS_PROFILE")
                                                            : "default";
  if (file.empty()) return std::nullopt;

  SecretString text;
  struct stat st {};
  int error = 0;
  FileRead r = read_file_secret(file, text, st, error);
  // One that others can access is refused before it is parsed (also when we cannot
  // open it ourselves).
  bool have_mode = r != FileRead::kOpenFailed || ::stat(file.c_str(), &st) == 0;
  if (!have_mode && !configured) return std::nullopt;  // no ~/.aws/credentials: the next source
  if (have_mode && (st.st_mode & S_IRWXO) != 0)
    fail(FailureKind::kAuth, kms, "authentication", "credentials file is world-accessible",
         "File \"" + file + "\" must not be accessible to other users.");
  if (r == FileRead::kTooLarge)
    fail(FailureKind::kAuth, kms, "authentication", "credentials file is too large",
         "File \"" + file + "\" is larger than " + std::to_string(kMaxSecretFileSize) + " bytes.");
  Credentials c;
  if (r == FileRead::kOk) c = parse_credentials_file(text.view(), profile);
  if (c.access_key.empty() || c.secret_key.empty()) {
    if (!configured) return std::nullopt;
    fail(FailureKind::kAuth, kms, "authentication", "no AWS credentials",
         "The profile \"" + profile + "\" of \"" + file + "\" has no aws_access_key_id and aws_secret_access_key" +
             (r == FileRead::kOk ? std::string(".") : " (the file cannot be read)."));
  }
  c.source = "profile \"" + profile + "\" of the shared credentials file \"" + file + "\"";
  return c;
}

bool credentials_well_formed(const Credentials& c) noexcept {
  std::string_view id = c.access_key.view();
  if (id.size() < 16 || id.size() > 128) return false;
  if (!std::all_of(id.begin(), id.end(), [](char ch) {
        return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
      }))
    return false;
  std::string_view secret = c.secret_key.view(), token = c.session_token.view();
  return !secret.empty() && secret.size() <= 128 && visible_ascii(secret) && token.size() <= 16384 &&
         visible_ascii(token);
}

Credentials parse_credentials_json(const HttpResponse& response, const std::string& kms, const std::string& op,
                                   const std::string& where) {
  long status = response.status;
  json out = parse_body(response);
  if (status < 200 || status >= 300) {
    std::string why;
    if (out.is_object())
      for (const char* field : {"message", "Message"})
        if (const SecureStdString* m = string_member(out, field)) {
          why = ": " + safe_message(std::string_view(m->data(), m->size()));
          break;
        }
    fail(status >= 500 || status == 429 ? FailureKind::kUnavailable : FailureKind::kAuth, kms, op,
         "HTTP " + std::to_string(status), where + " refused to issue credentials" + why + ".");
  }
  auto malformed = [&](const std::string& what) {
    fail(FailureKind::kAuth, kms, op, "malformed response", where + " " + what + ".");
  };
  if (!out.is_object()) malformed("did not answer with a JSON object");
  if (const SecureStdString* code = string_member(out, "Code"); code != nullptr && *code != "Success")
    fail(FailureKind::kAuth, kms, op, "refused",
         where + " answered with Code \"" + safe_message(std::string_view(code->data(), code->size())) + "\".");
  const SecureStdString* id = string_member(out, "AccessKeyId");
  const SecureStdString* secret = string_member(out, "SecretAccessKey");
  const SecureStdString* token = string_member(out, "Token");
  const SecureStdString* expiration = string_member(out, "Expiration");
  if (!id || !secret || !token) malformed("returned no AccessKeyId, SecretAccessKey and Token");
  Credentials c;
  c.access_key = SecretString(std::string_view(id->data(), id->size()));
  c.secret_key = SecretString(std::string_view(secret->data(), secret->size()));
  c.session_token = SecretString(std::string_view(token->data(), token->size()));
  if (!credentials_well_formed(c)) malformed("returned malformed credentials");
  if (!expiration || !parse_rfc3339(std::string_view(expiration->data(), expiration->size()), c.expires_at_us) ||
      c.expires_at_us <= 0)
    malformed("returned no valid Expiration");
  return c;
}

std::int64_t credential_refresh_at_us(std::int64_t expires_at_us, std::int64_t fetched_at_us) noexcept {
  if (expires_at_us <= fetched_at_us) return fetched_at_us;
  constexpr std::int64_t kEarly = 5LL * 60 * 1000000;
  std::int64_t lifetime = expires_at_us - fetched_at_us;
  return expires_at_us - std::min(kEarly, lifetime / 2);
}

std::int64_t unix_now_us() noexcept {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace pg_envelope::remote::aws
