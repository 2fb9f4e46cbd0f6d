// Shared pieces of the KMS fuzz harnesses (test/fuzz/fuzz_kms_*.cpp): how an input
// becomes an HTTP outcome, and the deliberate way to stop on a broken invariant.
//
// Input format of the response harnesses, so that seeds are readable responses:
//
//   <op> <status>[ <failure>]\n<body>
//
// <op> is the operation the harness replays (e.g. "decrypt"), <status> the HTTP
// status (0 to 999), <failure> an optional HttpFailure number (0 none, 1 interrupted,
// 2 timeout, 3 connect, 4 TLS, 5 protocol, 6 budget). Without a first line the whole
// input is the body of a 200 response to the harness's first operation.
//
// Every harness catches pg_envelope::Error only: it is how the pure code refuses a
// response. Anything else thrown (nlohmann exceptions, std::out_of_range, ...) ends
// the run, as it would end a PostgreSQL backend with an internal error or worse.
// Invariants use FUZZ_CHECK(cond, what) of fuzz_check.hpp.
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "pg_envelope/error.hpp"
#include "pg_envelope/http.hpp"

namespace pg_envelope::fuzz {

struct Input {
  std::string op;
  HttpResult result;
};

// `ops`: the operations the harness knows, the first being the default. An unknown
// <op> picks one of them by its first byte: in the server the operation is always
// one of the provider's own names, never text from a response.
inline Input read_input(const std::uint8_t* data, std::size_t size, std::initializer_list<std::string_view> ops) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  Input out;
  out.op = std::string(*ops.begin());
  out.result.response.status = 200;
  out.result.attempts = 1;
  std::size_t nl = in.find('\n');
  std::string_view first = nl == std::string_view::npos ? std::string_view{} : in.substr(0, nl);
  std::size_t sp = first.find(' ');
  if (nl != std::string_view::npos && sp != std::string_view::npos && sp > 0 && sp <= 32) {
    std::string_view op = first.substr(0, sp);
    const std::string_view* known = std::find(ops.begin(), ops.end(), op);
    out.op = std::string(known != ops.end() ? *known : ops.begin()[static_cast<unsigned char>(op[0]) % ops.size()]);
    std::string_view rest = first.substr(sp + 1);
    long status = 0;
    std::size_t i = 0;
    while (i < rest.size() && i < 3 && rest[i] >= '0' && rest[i] <= '9') status = status * 10 + (rest[i++] - '0');
    out.result.response.status = status;
    if (i + 1 < rest.size() && rest[i] == ' ' && rest[i + 1] >= '0' && rest[i + 1] <= '6')
      out.result.failure = static_cast<HttpFailure>(rest[i + 1] - '0');
    if (out.result.failure != HttpFailure::kNone) out.result.failure_text = "fuzzed transport failure";
    in.remove_prefix(nl + 1);
  }
  out.result.response.body = SecretString(in);
  return out;
}

// True when `s` is valid UTF-8 without control characters: what an error message,
// detail or hint may hold (PostgreSQL sends them to clients, converted to their
// encoding).
inline bool clean_text(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    unsigned c = *p;
    if (c < 0x20 || c == 0x7F) return false;
    std::size_t n = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
    if (n == 0 || static_cast<std::size_t>(end - p) < n) return false;
    for (std::size_t i = 1; i < n; ++i)
      if ((p[i] & 0xC0) != 0x80) return false;
    p += n;
  }
  return true;
}

// An Error thrown by the pure code: a well-formed SQLSTATE, a message, and text a
// client can be sent.
inline void check_error(const Error& e) {
  std::string_view state(e.sqlstate());
  FUZZ_CHECK(state.size() == 5, "an Error has a five-character SQLSTATE");
  for (char c : state) FUZZ_CHECK((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z'), "SQLSTATE characters");
  FUZZ_CHECK(e.what()[0] != '\0', "an Error has a message");
  FUZZ_CHECK(clean_text(e.what()), "an error message is clean UTF-8 text");
  FUZZ_CHECK(clean_text(e.detail()), "an error detail is clean UTF-8 text");
  FUZZ_CHECK(clean_text(e.hint()), "an error hint is clean UTF-8 text");
}

}  // namespace pg_envelope::fuzz
