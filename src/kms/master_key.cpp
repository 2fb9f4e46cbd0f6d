// Reading the local KMS master key from envelope.master_key_file or
// envelope.master_key_command. Runs in the postmaster, before any backend exists.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <ctime>
#include <cstdio>
#include <cstring>

#include "pg_envelope/error.hpp"
#include "pg_envelope/kms.hpp"

namespace pg_envelope {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

constexpr std::size_t kMaxKeyText = 4096;

}  // namespace

SecureBytes parse_master_key_hex(std::string_view text) {
  while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
  const char* bad = "The master key must be exactly 64 hexadecimal characters (256 bits).";
  if (text.size() != 64) throw Error(sqlstate::kInvalidParameterValue, "invalid master key", bad);
  SecureBytes key(32);
  for (std::size_t i = 0; i < 32; ++i) {
    int hi = hex_value(text[2 * i]), lo = hex_value(text[2 * i + 1]);
    if (hi < 0 || lo < 0) throw Error(sqlstate::kInvalidParameterValue, "invalid master key", bad);
    key.data()[i] = static_cast<std::uint8_t>((hi << 4) | lo);
  }
  return key;
}

SecureBytes read_master_key_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    throw Error(e == ENOENT ? sqlstate::kUndefinedFile : sqlstate::kIoError,
                "could not open master key file \"" + path + "\"", std::string(std::strerror(e)) + ".");
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(sqlstate::kIoError, "master key file \"" + path + "\" is not a regular file");
  }
  // Same rule PostgreSQL applies to ssl_key_file: owned by us, no group/other access;
  // or owned by root with at most group read.
  bool ok = (st.st_uid == geteuid() && (st.st_mode & (S_IRWXG | S_IRWXO)) == 0) ||
            (st.st_uid == 0 && (st.st_mode & (S_IWGRP | S_IXGRP | S_IRWXO)) == 0);
  if (!ok) {
    ::close(fd);
    throw Error(sqlstate::kConfigFileError, "master key file \"" + path + "\" has group or world access",
                "The file must be owned by the server's user with mode 0600 or less, or by root with mode "
                "0640 or less.");
  }
  SecureBytes buf(kMaxKeyText + 1);
  std::size_t used = 0;
  while (used < buf.size()) {
    ssize_t n = ::read(fd, buf.data() + used, buf.size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      throw Error(sqlstate::kIoError, "could not read master key file \"" + path + "\"",
                  std::string(std::strerror(e)) + ".");
    }
    if (n == 0) break;
    used += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return parse_master_key_hex({reinterpret_cast<const char*>(buf.data()), used});
}

namespace {

std::int64_t now_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

[[noreturn]] void command_timed_out(pid_t pid, int fd, int timeout_ms) {
  ::kill(-pid, SIGKILL);  // the shell and everything it started
  if (fd >= 0) ::close(fd);
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  throw Error(sqlstate::kConfigFileError, "envelope.master_key_command timed out",
              "It did not finish within " + std::to_string(timeout_ms) +
                  " ms (envelope.master_key_command_timeout); it and the processes it started were killed.");
}

}  // namespace

SecureBytes read_master_key_command(const std::string& command, int timeout_ms) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    throw Error(sqlstate::kIoError, "could not run envelope.master_key_command", std::string(std::strerror(errno)) + ".");
  const char* cmd = command.c_str();  // nothing but async-signal-safe calls after fork
  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    throw Error(sqlstate::kIoError, "could not run envelope.master_key_command", std::string(std::strerror(e)) + ".");
  }
  if (pid == 0) {
    // Like PostgreSQL's own OpenPipeStream: the command gets default SIGPIPE handling
    // and no signals blocked, whatever the postmaster had at this point.
    ::signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::setpgid(0, 0);
    if (::dup2(fds[1], STDOUT_FILENO) < 0) ::_exit(126);
    ::execl("/bin/sh", "sh", "-c", cmd, static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also here, so a kill(-pid) cannot race the child's own call
  ::close(fds[1]);
  const std::int64_t deadline = now_ms() + timeout_ms;

  // Read until end of output (at most kMaxKeyText + 1 bytes kept; the rest is drained
  // so the child never blocks on a full pipe), within the deadline.
  SecureBytes buf(kMaxKeyText + 1);
  std::size_t used = 0;
  for (;;) {
    std::int64_t left = deadline - now_ms();
    if (left <= 0) command_timed_out(pid, fds[0], timeout_ms);
    pollfd p{fds[0], POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) continue;  // the deadline is checked above
    char sink[256];
    bool keep = used < buf.size();
    ssize_t n = keep ? ::read(fds[0], buf.data() + used, buf.size() - used) : ::read(fds[0], sink, sizeof sink);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // end of output (or a read error: judged by the exit status)
    if (keep) used += static_cast<std::size_t>(n);
  }
  ::close(fds[0]);

  // Then wait for the shell to exit, within the same deadline.
  int status = 0;
  for (;;) {
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) {
      status = -1;
      break;
    }
    if (now_ms() >= deadline) command_timed_out(pid, -1, timeout_ms);
    ::usleep(5000);
  }
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw Error(sqlstate::kConfigFileError, "envelope.master_key_command failed",
                status != -1 && WIFEXITED(status)
                    ? "The command exited with status " + std::to_string(WEXITSTATUS(status)) + "."
                    : std::string("The command did not exit normally."));
  return parse_master_key_hex({reinterpret_cast<const char*>(buf.data()), used});
}

}  // namespace pg_envelope
