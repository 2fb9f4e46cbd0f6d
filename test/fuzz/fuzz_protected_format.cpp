// libFuzzer harness: parse_sealed(), the structural check of a protected column's stored
// value (the receive/input functions, the CHECK and the trigger run it on untrusted
// bytes), and the "penv1:" text form.
//
// Invariants, against protected_format.hpp:
//   - an accepted value's views lie inside the input; prefix and envelope cover it
//     exactly; the envelope is a valid envelope v1;
//   - sealed_prefix() of the parsed fields re-serializes the prefix byte for byte;
//   - a sealed value is never an unsealed plaintext, and every text input is one;
//   - the text form of any bytes decodes back to the same bytes with the same verdict.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "fuzz_check.hpp"
#include "pg_envelope/protected_format.hpp"

using namespace pg_envelope;

namespace {

bool inside(ByteView part, ByteView whole) {
  return part.empty() || (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const ByteView in(data, size);
  for (PlainType type : {PlainType::kText, PlainType::kBytea, PlainType::kJsonb}) {
    SealedView v;
    const FormatProblem problem = parse_sealed(in, type, v);
    if (problem) {
      FUZZ_CHECK(problem.detail[0] != '\0', "a rejection has an empty detail");
    } else {
      FUZZ_CHECK(is_sealed(in), "accepted a value without the sealed marker");
      FUZZ_CHECK(inside(v.blind, in) && inside(v.prefix, in) && inside(v.envelope, in), "a view points outside the input");
      FUZZ_CHECK(v.prefix.data() == data && v.prefix.size() + v.envelope.size() == size, "prefix + envelope != input");
      FUZZ_CHECK(v.key_name.size() >= 1 && v.key_name.size() <= 63, "key name length");
      FUZZ_CHECK(v.has_context || v.context.empty(), "a context without the flag");
      FUZZ_CHECK((v.blind_key_id == 0) == v.blind.empty() && v.blind.size() <= kMaxBlindIndex, "blind index fields");
      EnvelopeView env;
      FUZZ_CHECK(!parse_envelope(v.envelope, env), "accepted an invalid envelope");
      std::uint32_t pid = 0;
      ByteView blind;
      FUZZ_CHECK(sealed_blind(in, type, pid, blind) && pid == v.protection_id && blind.data() == v.blind.data() &&
                     blind.size() == v.blind.size(),
                 "sealed_blind() disagrees with parse_sealed()");
      const Bytes again = sealed_prefix(type, v.protection_id, v.blind_key_id, v.blind, v.key_name, v.has_context,
                                        v.context);
      FUZZ_CHECK(again.size() == v.prefix.size() && std::memcmp(again.data(), v.prefix.data(), again.size()) == 0,
                 "sealed_prefix(parse(x)) != prefix of x");
    }
    {
      std::uint32_t pid = 0;
      ByteView blind;
      if (sealed_blind(in, type, pid, blind)) FUZZ_CHECK(inside(blind, in) && blind.size() <= kMaxBlindIndex, "blind view");
    }
    ByteView plain;
    const bool unsealed = unsealed_plaintext(in, type, plain);
    FUZZ_CHECK(!(unsealed && is_sealed(in)), "a sealed value read as plaintext");
    if (type == PlainType::kText) FUZZ_CHECK(unsealed == !is_sealed(in), "text: not sealed means plaintext");
    if (unsealed) FUZZ_CHECK(inside(plain, in), "plaintext view outside the input");

    std::string text(protected_text_form_length(size), '\0');
    write_protected_text_form(in, text.data());
    Bytes back;
    bool matched = false;
    const FormatProblem text_problem = decode_protected_text_form(text, type, back, matched);
    FUZZ_CHECK(matched, "the text form lacks its prefix");
    FUZZ_CHECK(static_cast<bool>(text_problem) == static_cast<bool>(problem), "text verdict != binary verdict");
    FUZZ_CHECK(back.size() == size && (size == 0 || std::memcmp(back.data(), data, size) == 0),
               "decode(write(x)) != x");
  }
  // Arbitrary text: anything without the prefix is plaintext; with it, never a crash.
  Bytes out;
  bool matched = false;
  const std::string_view text = fuzz::as_text(data, size);
  (void)decode_protected_text_form(text, PlainType::kText, out, matched);
  FUZZ_CHECK(matched == (text.substr(0, kProtectedTextPrefix.size()) == kProtectedTextPrefix), "prefix detection");
  return 0;
}
