// Helpers shared by the unit tests: locating and loading the public test vectors,
// hex decoding, and checking the pg_envelope::Error a call throws.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include "pg_envelope/error.hpp"
#include "pg_envelope/secure_bytes.hpp"

#ifndef PG_ENVELOPE_TESTDATA_DIR
#error "PG_ENVELOPE_TESTDATA_DIR must name the test-vector directory (set by CMakeLists.txt)"
#endif

namespace pg_envelope::test {

inline std::string testdata_path(std::string_view relative) {
  return std::string(PG_ENVELOPE_TESTDATA_DIR) + "/" + std::string(relative);
}

// Loads a JSON vector file. A missing or unparsable file is a test failure, never a
// skip: the caller must ASSERT_TRUE on the result.
inline ::testing::AssertionResult load_json(std::string_view relative, nlohmann::json& out) {
  const std::string path = testdata_path(relative);
  std::ifstream in(path);
  if (!in)
    return ::testing::AssertionFailure()
           << "test-vector file \"" << path << "\" cannot be opened; the vectors ship in test/vectors "
           << "(-DPG_ENVELOPE_TESTDATA names another directory holding wycheproof/)";
  try {
    out = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "test-vector file \"" << path << "\" is not JSON: " << e.what();
  }
  return ::testing::AssertionSuccess();
}

inline Bytes from_hex(std::string_view hex) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    throw std::invalid_argument("not a hex digit");
  };
  if (hex.size() % 2 != 0) throw std::invalid_argument("odd-length hex string");
  Bytes out(hex.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i)
    out[i] = static_cast<std::uint8_t>((nibble(hex[2 * i]) << 4) | nibble(hex[2 * i + 1]));
  return out;
}

inline Bytes to_bytes(ByteView v) { return Bytes(v.begin(), v.end()); }

// Runs fn, which must throw pg_envelope::Error; returns it for further checks.
inline std::optional<Error> catch_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e;
  } catch (...) {
    ADD_FAILURE() << "threw something other than pg_envelope::Error";
    return std::nullopt;
  }
  return std::nullopt;
}

// True when any of message, detail or hint contains `needle`.
inline bool error_mentions(const Error& e, std::string_view needle) {
  auto has = [&](std::string_view s) { return s.find(needle) != std::string_view::npos; };
  return has(e.what()) || has(e.detail()) || has(e.hint());
}

}  // namespace pg_envelope::test

namespace pg_envelope::test {

// A file with `content` and exactly `mode`, removed when the object goes.
class TempFile {
 public:
  TempFile(const std::string& content, mode_t mode) {
    char name[] = "/tmp/pg_envelope_test_XXXXXX";
    int fd = mkstemp(name);
    EXPECT_GE(fd, 0);
    path_ = name;
    EXPECT_EQ(write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
    close(fd);
    chmod(name, mode);
  }
  ~TempFile() { unlink(path_.c_str()); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace pg_envelope::test
