// Shared by the libFuzzer harnesses test/fuzz/fuzz_*.cpp (built by scripts/fuzz.sh, or
// CMake with -DPG_ENVELOPE_FUZZ=ON).
//
// FUZZ_CHECK(cond, what): an invariant of the code under test. When it does not hold,
// it names the invariant and the harness line on stderr and aborts, so libFuzzer
// reports a crash and saves the input that broke it. Never prints the input itself:
// libFuzzer saves it as a file.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#define FUZZ_CHECK(cond, what)                                                                              \
  do {                                                                                                      \
    if (!(cond)) {                                                                                          \
      std::fprintf(stderr, "pg_envelope fuzz invariant failed at %s:%d: %s (%s)\n", __FILE__, __LINE__, \
                   what, #cond);                                                                           \
      std::abort();                                                                                         \
    }                                                                                                       \
  } while (0)

namespace pg_envelope::fuzz {

// The fuzzer's bytes as text. libFuzzer hands each input over in a heap block of
// exactly `size` bytes, so a parser reading past the end of the view (a missing length
// check, or trusting a NUL terminator) is caught by AddressSanitizer.
inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace pg_envelope::fuzz
