// Loading the local KMS master key: parse_master_key_hex, read_master_key_file
// (with its permission rule) and read_master_key_command.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <signal.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <thread>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "pg_envelope/error.hpp"
#include "pg_envelope/kms.hpp"
#include "test_support.hpp"

namespace pg_envelope {
namespace {

using test::catch_error;

// A public, obviously-fake key; every byte is distinct so a misparse shows.
constexpr const char* kHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

Bytes expected_key() { return test::from_hex(kHex); }
Bytes copy_of(const SecureBytes& s) { return Bytes(s.data(), s.data() + s.size()); }

// No part of the rejected input may appear in the message, detail or hint.
void expect_no_echo(const Error& e, const std::string& input) {
  for (std::size_t i = 0; i + 12 <= input.size(); ++i)
    ASSERT_FALSE(test::error_mentions(e, input.substr(i, 12)))
        << "error text contains input characters " << i << ".." << i + 12 << ": " << e.what() << " / "
        << e.detail();
}

TEST(ParseMasterKeyHex, AcceptsSixtyFourHexDigits) {
  EXPECT_EQ(copy_of(parse_master_key_hex(kHex)), expected_key());
  std::string upper = kHex;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_EQ(copy_of(parse_master_key_hex(upper)), expected_key());
}

TEST(ParseMasterKeyHex, AcceptsSurroundingWhitespace) {
  for (const std::string& text : {std::string(kHex) + "\n", std::string(kHex) + "\r\n", "  " + std::string(kHex),
                                  "\t" + std::string(kHex) + " \n\n", "\n" + std::string(kHex)}) {
    EXPECT_EQ(copy_of(parse_master_key_hex(text)), expected_key()) << '"' << text << '"';
  }
}

TEST(ParseMasterKeyHex, RejectsWrongLengthAndNonHexWithoutEchoingIt) {
  const std::string hex = kHex;
  std::vector<std::string> bad = {
      hex.substr(0, 63),                       // 63 characters
      hex + "0",                               // 65 characters
      hex.substr(0, 62),                       // 31 bytes
      hex + hex,                               // 64 bytes
      "",                                      // empty
      "   \n",                                 // whitespace only
      hex.substr(0, 63) + "g",                 // non-hex last digit
      "x" + hex.substr(1),                     // non-hex first digit
      hex.substr(0, 32) + " " + hex.substr(33),  // embedded space
      hex.substr(0, 32) + "\n" + hex.substr(32, 31),
      "0x" + hex.substr(2),                    // "0x" prefix
      hex.substr(0, 30) + "-" + hex.substr(31),
      "\"" + hex.substr(0, 62) + "\"",
  };
  for (const std::string& text : bad) {
    SCOPED_TRACE('"' + text + '"');
    auto e = catch_error([&] { parse_master_key_hex(text); });
    ASSERT_TRUE(e.has_value()) << "accepted";
    EXPECT_STREQ(e->sqlstate(), "22023");
    expect_no_echo(*e, text);
  }
}

// A private temporary directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/pg_envelope_unit_XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = buf.data();
  }
  ~TempDir() {
    for (const std::string& f : files_) ::unlink(f.c_str());
    ::rmdir(path_.c_str());
  }
  std::string write(const std::string& name, const std::string& content, mode_t mode) {
    std::string p = path_ + "/" + name;
    int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) throw std::runtime_error("cannot create " + p);
    files_.push_back(p);
    if (::write(fd, content.data(), content.size()) != static_cast<ssize_t>(content.size()))
      throw std::runtime_error("cannot write " + p);
    ::close(fd);
    if (::chmod(p.c_str(), mode) != 0) throw std::runtime_error("cannot chmod " + p);
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<std::string> files_;
};

TEST(ReadMasterKeyFile, AcceptsMode0600) {
  TempDir dir;
  const std::string path = dir.write("master.key", std::string(kHex) + "\n", 0600);
  EXPECT_EQ(copy_of(read_master_key_file(path)), expected_key());
}

TEST(ReadMasterKeyFile, RefusesGroupOrWorldAccess) {
  TempDir dir;
  // Rejected whoever runs the test: world access, or group write (which even the
  // root-owned exception in master_key.cpp does not allow).
  for (mode_t mode : {0644, 0604, 0606, 0660, 0620, 0666}) {
    SCOPED_TRACE(mode);
    const std::string path = dir.write("master_" + std::to_string(mode) + ".key", kHex, mode);
    auto e = catch_error([&] { read_master_key_file(path); });
    ASSERT_TRUE(e.has_value()) << "accepted a file with mode 0" << std::oct << mode;
    EXPECT_STREQ(e->sqlstate(), "F0000");
    EXPECT_FALSE(test::error_mentions(*e, std::string(kHex).substr(0, 16)));
  }
}

TEST(ReadMasterKeyFile, RefusesGroupReadUnlessOwnedByRoot) {
  TempDir dir;
  const std::string path = dir.write("group_read.key", kHex, 0640);
  if (geteuid() == 0) {
    // PostgreSQL's ssl_key_file rule: a root-owned key may be group-readable.
    EXPECT_EQ(copy_of(read_master_key_file(path)), expected_key());
  } else {
    auto e = catch_error([&] { read_master_key_file(path); });
    ASSERT_TRUE(e.has_value());
    EXPECT_STREQ(e->sqlstate(), "F0000");
  }
}

TEST(ReadMasterKeyFile, MissingFileIsUndefinedFile) {
  TempDir dir;
  auto e = catch_error([&] { read_master_key_file(dir.path() + "/does-not-exist.key"); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "58P01");
}

TEST(ReadMasterKeyFile, DirectoryIsNotAKeyFile) {
  TempDir dir;
  auto e = catch_error([&] { read_master_key_file(dir.path()); });
  ASSERT_TRUE(e.has_value());
}

TEST(ReadMasterKeyFile, BadContentIsRejectedWithoutEchoingIt) {
  TempDir dir;
  const std::string content = std::string(kHex).substr(0, 60) + "zzzz\n";
  const std::string path = dir.write("bad.key", content, 0600);
  auto e = catch_error([&] { read_master_key_file(path); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "22023");
  expect_no_echo(*e, content);
}

TEST(ReadMasterKeyCommand, ReadsTheCommandsOutput) {
  EXPECT_EQ(copy_of(read_master_key_command(std::string("printf ") + kHex)), expected_key());
  EXPECT_EQ(copy_of(read_master_key_command(std::string("echo ") + kHex)), expected_key());
}

TEST(ReadMasterKeyCommand, NonzeroExitFails) {
  auto e = catch_error([] { read_master_key_command("exit 3"); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "F0000");
  // Even when the command printed a valid key first.
  e = catch_error([] { read_master_key_command(std::string("printf ") + kHex + "; exit 1"); });
  ASSERT_TRUE(e.has_value()) << "key accepted from a failing command";
  EXPECT_STREQ(e->sqlstate(), "F0000");
  EXPECT_FALSE(test::error_mentions(*e, std::string(kHex).substr(0, 16)));
}

TEST(ReadMasterKeyCommand, KilledCommandFails) {
  auto e = catch_error([] { read_master_key_command("kill -9 $$"); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "F0000");
}

TEST(ReadMasterKeyCommand, BadOutputIsRejectedWithoutEchoingIt) {
  const std::string out = std::string(kHex).substr(0, 40) + "not-a-key";
  auto e = catch_error([&] { read_master_key_command("printf '" + out + "'"); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "22023");
  expect_no_echo(*e, out);
}

TEST(ReadMasterKeyCommand, OversizedOutputIsRejected) {
  // More than the 4 KiB limit, and the command is not left blocked on a full pipe.
  auto e = catch_error([] { read_master_key_command("yes 0 | head -c 100000"); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "22023");
}

TEST(ReadMasterKeyCommand, HangingCommandIsKilledAtTheTimeout) {
  // A command that never finishes, and one that exits but leaves a child holding its
  // output open: both end at the timeout with F0000, and their processes are killed.
  for (const std::string& cmd : {std::string("sleep 30"), std::string("printf ") + kHex + "; (sleep 30 &)"}) {
    auto start = std::chrono::steady_clock::now();
    auto e = catch_error([&] { read_master_key_command(cmd, 300); });
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
    ASSERT_TRUE(e.has_value()) << cmd;
    EXPECT_STREQ(e->sqlstate(), "F0000");
    EXPECT_NE(std::string(e->what()).find("timed out"), std::string::npos) << e->what();
    EXPECT_GE(ms, 250) << cmd;
    EXPECT_LT(ms, 5000) << cmd;
    EXPECT_FALSE(test::error_mentions(*e, std::string(kHex).substr(0, 16)));
  }
}

TEST(ReadMasterKeyCommand, TimeoutKillsTheWholeProcessGroup) {
  // The command records its grandchild's pid, then hangs; after the timeout that
  // grandchild must be gone too.
  TempDir dir;
  const std::string pidfile = dir.write("child.pid", "", 0600);  // removed with the directory
  auto e = catch_error([&] { read_master_key_command("sleep 60 & echo $! > " + pidfile + "; wait", 300); });
  ASSERT_TRUE(e.has_value());
  std::ifstream in(pidfile);
  long pid_read = 0;
  ASSERT_TRUE(in >> pid_read) << "no pid recorded";
  pid_t child = static_cast<pid_t>(pid_read);
  // Dead: no such process any more, or a zombie waiting for init to reap it.
  auto dead = [child] {
    if (::kill(child, 0) != 0 && errno == ESRCH) return true;
    std::ifstream stat("/proc/" + std::to_string(child) + "/stat");
    std::string line;
    std::getline(stat, line);
    std::size_t paren = line.rfind(')');
    return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
  };
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = dead();
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(gone) << "pid " << child << " survived the timeout";
}

TEST(ReadMasterKeyCommand, FastCommandIsNotAffectedByTheTimeout) {
  EXPECT_EQ(copy_of(read_master_key_command(std::string("printf ") + kHex, 5000)), expected_key());
}

}  // namespace
}  // namespace pg_envelope
