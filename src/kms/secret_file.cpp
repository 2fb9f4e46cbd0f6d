// Secrets read from files (see secret_file.hpp).
#include "secret_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "pg_envelope/error.hpp"

namespace pg_envelope::remote {

std::string_view trim_view(std::string_view v) noexcept {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; };
  while (!v.empty() && space(v.back())) v.remove_suffix(1);
  while (!v.empty() && space(v.front())) v.remove_prefix(1);
  return v;
}

FileRead read_file_secret(const std::string& path, SecretString& out, struct stat& st, int& error) {
  out.wipe();
  error = 0;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = errno;
    return FileRead::kOpenFailed;
  }
  if (::fstat(fd, &st) != 0) {
    error = errno;
    ::close(fd);
    return FileRead::kOpenFailed;
  }
  char chunk[4096];
  FileRead result = FileRead::kOk;
  try {
    for (;;) {
      ssize_t n = ::read(fd, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        error = errno;
        result = FileRead::kReadFailed;
        break;
      }
      if (n == 0) break;
      if (out.size() + static_cast<std::size_t>(n) > kMaxSecretFileSize) {
        result = FileRead::kTooLarge;
        break;
      }
      out.append(chunk, static_cast<std::size_t>(n));
    }
  } catch (...) {
    secure_zero(chunk, sizeof chunk);
    ::close(fd);
    out.wipe();
    throw;
  }
  secure_zero(chunk, sizeof chunk);
  ::close(fd);
  if (result != FileRead::kOk) out.wipe();
  return result;
}

SecretString read_secret_file(const std::string& path, const std::string& kms, const char* what) {
  SecretString content;
  struct stat st {};
  int error = 0;
  FileRead r = read_file_secret(path, content, st, error);
  if (r == FileRead::kOpenFailed || r == FileRead::kReadFailed)
    throw Error(sqlstate::kUndefinedFile, "could not read the " + std::string(what) + " file of KMS \"" + kms + "\"",
                "File \"" + path + "\": " + std::strerror(error) + ".");
  if ((st.st_mode & S_IRWXO) != 0)
    throw Error(sqlstate::kConfigFileError, "the " + std::string(what) + " file of KMS \"" + kms + "\" is world-accessible",
                "File \"" + path + "\" must not be readable by other users.");
  if (r == FileRead::kTooLarge)
    throw Error(sqlstate::kConfigFileError, "the " + std::string(what) + " file of KMS \"" + kms + "\" is too large",
                "File \"" + path + "\" is larger than " + std::to_string(kMaxSecretFileSize) + " bytes.");
  SecretString out(trim_view(content.view()));
  if (out.empty())
    throw Error(sqlstate::kConfigFileError, "the " + std::string(what) + " file of KMS \"" + kms + "\" is empty",
                "File \"" + path + "\" holds no " + what + ".");
  return out;
}

SecretString CachedSecretFile::get() {
  struct stat st;
  if (::stat(path_.c_str(), &st) == 0 &&
      (st.st_mtim.tv_sec != mtime_.tv_sec || st.st_mtim.tv_nsec != mtime_.tv_nsec || content_.empty())) {
    content_ = read_secret_file(path_, kms_, what_);
    mtime_ = st.st_mtim;
  } else if (content_.empty()) {
    content_ = read_secret_file(path_, kms_, what_);
  }
  return SecretString(content_.view());
}

}  // namespace pg_envelope::remote
