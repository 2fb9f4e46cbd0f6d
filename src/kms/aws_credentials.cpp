// AWS credentials from the environment or the shared credentials file (see aws_credentials.hpp).
#include "aws_credentials.hpp"

#include <sys/stat.h>

#include "remote_kms.hpp"
#include "secret_file.hpp"

namespace pg_envelope::remote::aws {

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

Credentials load_credentials(const std::string& kms, const std::string& file_option,
                             const std::string& profile_option,
                             const std::function<const char*(const char*)>& getenv) {
  auto env = [&](const char* n) -> const char* {
    const char* v = getenv ? getenv(n) : nullptr;
    return (v && *v) ? v : nullptr;
  };
  Credentials c;
  if (env("AWS_ACCESS_KEY_ID") && env("AWS_SECRET_ACCESS_KEY")) {
    c.access_key = SecretString(env("AWS_ACCESS_KEY_ID"));
    c.secret_key = SecretString(env("AWS_SECRET_ACCESS_KEY"));
    if (env("AWS_SESSION_TOKEN")) c.session_token = SecretString(env("AWS_SESSION_TOKEN"));
    return c;
  }
  std::string file = file_option;
  if (file.empty() && env("AWS_SHARED_CREDENTIALS_FILE")) file = env("AWS_SHARED_CREDENTIALS_FILE");
  if (file.empty() && env("HOME")) file = std::string(env("HOME")) + "/.aws/credentials";
  std::string profile = !profile_option.empty() ? profile_option : (env("AWS_PROFILE") ? env("AWS_PROFILE") : "default");

  SecretString text;
  struct stat st {};
  int error = 0;
  FileRead r = file.empty() ? FileRead::kOpenFailed : read_file_secret(file, text, st, error);
  // A file that cannot be opened or read holds no credentials for us: the error below
  // names it. One that others can access is refused before it is parsed (also when
  // we cannot open it ourselves).
  bool have_mode = r != FileRead::kOpenFailed || (!file.empty() && ::stat(file.c_str(), &st) == 0);
  if (have_mode && (st.st_mode & S_IRWXO) != 0)
    fail(FailureKind::kAuth, kms, "authentication", "credentials file is world-accessible",
         "File \"" + file + "\" must not be accessible to other users.");
  if (r == FileRead::kTooLarge)
    fail(FailureKind::kAuth, kms, "authentication", "credentials file is too large",
         "File \"" + file + "\" is larger than " + std::to_string(kMaxSecretFileSize) + " bytes.");
  if (r == FileRead::kOk) c = parse_credentials_file(text.view(), profile);
  if (c.access_key.empty() || c.secret_key.empty())
    fail(FailureKind::kAuth, kms, "authentication", "no AWS credentials",
         "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not in the server's environment and profile \"" + profile +
             "\" of \"" + file + "\" has no keys.");
  return c;
}

}  // namespace pg_envelope::remote::aws
