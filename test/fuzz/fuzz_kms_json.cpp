// Fuzzes the JSON reader and writer every KMS response and request goes through
// (src/kms/secure_json.hpp) against nlohmann's own, which the providers used before:
// the same acceptance and the same value for every input (up to the nesting limit),
// and dump_json_secret() writing exactly what dump() writes. Input: any bytes.
// Seeds: test/fuzz/corpus/kms_json/.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_kms_support.hpp"
#include "kms/secure_json.hpp"

using namespace pg_envelope;

namespace {

int depth_of(const remote::json& j) {
  if (!j.is_structured()) return 0;
  int d = 0;
  for (const auto& v : j) d = std::max(d, depth_of(v));
  return d + 1;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  remote::json ours = remote::parse_json_secret(text);
  remote::json theirs = remote::json::parse(text.begin(), text.end(), nullptr, false);
  if (ours.is_discarded()) {
    // Refused: nlohmann refuses too, unless only our nesting limit was hit.
    FUZZ_CHECK(theirs.is_discarded() || depth_of(theirs) > remote::kMaxJsonDepth, "refused only what nlohmann refuses, or deeper than the limit");
    return 0;
  }
  FUZZ_CHECK(!theirs.is_discarded(), "accepted only what nlohmann accepts");
  FUZZ_CHECK(ours.type() == theirs.type(), "the same type as nlohmann");
  auto a = ours.dump(), b = theirs.dump();
  FUZZ_CHECK(a == b, "the same value as nlohmann");
  try {
    SecretString written = remote::dump_json_secret(ours);
    FUZZ_CHECK(written.view() == std::string_view(a.data(), a.size()), "dump_json_secret writes what dump() writes");
    // What we write reads back to the same value.
    FUZZ_CHECK(remote::parse_json_secret(written.view()) == ours, "what is written reads back to the same value");
  } catch (const Error&) {
    FUZZ_CHECK(false, "every parsed value can be written (its strings are valid UTF-8)");
  }
  return 0;
}
