// libFuzzer harness: parse_master_key_hex(), which parses what read_master_key_file()
// and read_master_key_command() read (at most 4097 bytes of a key file or of a
// command's output) into the local KMS master key.
//
// Invariants (docs/local-kms.md):
//   - accepted exactly when, after trimming spaces, tabs, CR and LF at both ends, the
//     text is 64 hexadecimal digits (either case); the key is then those 32 bytes;
//   - anything else throws pg_envelope::Error with SQLSTATE 22023 and nothing else,
//     and the error never repeats the input: no run of 8 hex digits from it appears in
//     the message, detail or hint (a near-miss key file is still key material).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "pg_envelope/error.hpp"
#include "pg_envelope/kms.hpp"

using namespace pg_envelope;

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string_view trimmed(std::string_view t) {
  while (!t.empty() && is_space(t.front())) t.remove_prefix(1);
  while (!t.empty() && is_space(t.back())) t.remove_suffix(1);
  return t;
}

bool mentions_a_hex_run_of(const std::string& message, std::string_view input) {
  constexpr std::size_t kRun = 8;
  std::size_t run = 0;
  for (std::size_t i = 0; i < input.size(); ++i) {
    run = hex_value(input[i]) >= 0 ? run + 1 : 0;
    if (run >= kRun && message.find(input.substr(i + 1 - kRun, kRun)) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = fuzz::as_text(data, size);
  const std::string_view core = trimmed(text);
  bool valid = core.size() == 64;
  for (std::size_t i = 0; valid && i < core.size(); ++i) valid = hex_value(core[i]) >= 0;

  try {
    const SecureBytes key = parse_master_key_hex(text);
    FUZZ_CHECK(valid, "accepted a master key that is not 64 hex digits between whitespace");
    FUZZ_CHECK(key.size() == 32, "master key length");
    for (std::size_t i = 0; i < 32; ++i)
      FUZZ_CHECK(key.data()[i] == ((hex_value(core[2 * i]) << 4) | hex_value(core[2 * i + 1])),
                 "master key bytes differ from the hex digits");
  } catch (const Error& e) {
    FUZZ_CHECK(!valid, "rejected a well-formed master key");
    FUZZ_CHECK(std::strcmp(e.sqlstate(), sqlstate::kInvalidParameterValue) == 0, "SQLSTATE is not 22023");
    FUZZ_CHECK(!mentions_a_hex_run_of(e.what(), text) && !mentions_a_hex_run_of(e.detail(), text) &&
                   !mentions_a_hex_run_of(e.hint(), text),
               "the error repeats part of the rejected key text");
  }
  // Anything but pg_envelope::Error escapes and libFuzzer reports it (std::terminate).
  return 0;
}
