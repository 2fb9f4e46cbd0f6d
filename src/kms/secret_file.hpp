// Secrets read from files: the token files of the Vault, GCP and Azure providers
// ("token_file") and the AWS shared credentials file. Pure C++.
//
// Every file is read whole through open(2), fstat(2) and read(2) into wiping memory
// (no stream buffers, no std::string), and is never larger than kMaxSecretFileSize.
#pragma once

#include <sys/stat.h>

#include <cstddef>
#include <ctime>
#include <string>
#include <string_view>
#include <utility>

#include "pg_envelope/secrets.hpp"

namespace pg_envelope::remote {

inline constexpr std::size_t kMaxSecretFileSize = 1u << 20;

enum class FileRead { kOk, kOpenFailed, kReadFailed, kTooLarge };

// The low-level reader: reads the file at `path` into `out`; `st` receives its
// fstat(2) (valid unless kOpenFailed), `error` the errno of a failure. On any result
// but kOk, `out` is left empty. Never throws but std::bad_alloc.
FileRead read_file_secret(const std::string& path, SecretString& out, struct stat& st, int& error);

// Reads a credential file (a token), trimmed; refuses files that other users (outside
// the owner and group) can access (F0000), that cannot be read (58P01), that are
// empty or larger than kMaxSecretFileSize (F0000). `what` names the content in
// messages ("token").
SecretString read_secret_file(const std::string& path, const std::string& kms_name, const char* what);

// A credential file read with read_secret_file() and kept: read on first use, and
// again whenever its modification time changes, so a token rotated by an agent is
// picked up without a reconnect. While the file cannot be stat(2)ed, the content read
// last is used.
class CachedSecretFile {
 public:
  CachedSecretFile() = default;
  CachedSecretFile(std::string path, std::string kms_name, const char* what)
      : path_(std::move(path)), kms_(std::move(kms_name)), what_(what) {}

  // The configured path; empty when there is none.
  const std::string& path() const noexcept { return path_; }

  // A copy of the content. Throws the errors of read_secret_file().
  SecretString get();

 private:
  std::string path_;
  std::string kms_;
  const char* what_ = "";
  SecretString content_;
  timespec mtime_{};
};

// `text` without the whitespace (C locale isspace) around it.
std::string_view trim_view(std::string_view text) noexcept;

}  // namespace pg_envelope::remote
