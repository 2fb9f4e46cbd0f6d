// libFuzzer harness: decode_text_form(), the parser behind the types' input function
// (envelope_encrypted_in), which reads "env1:<base64>" from any SQL text.
//
// Invariants:
//   - only text beginning with "env1:" is accepted, and only when the rest is strict
//     base64 of a structurally valid envelope (parse_envelope agrees);
//   - the text form is canonical: an accepted text is exactly write_text_form() of the
//     bytes it decodes to (so every value has one text form, and output -> input ->
//     output is the identity), and text_form_length() gives its length.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "pg_envelope/encoding.hpp"
#include "pg_envelope/envelope_format.hpp"

using namespace pg_envelope;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = fuzz::as_text(data, size);
  Bytes out = {0xEE};
  const FormatProblem problem = decode_text_form(text, out);

  const bool prefixed = text.substr(0, kTextPrefix.size()) == kTextPrefix;
  Bytes b64;
  const bool base64_ok = prefixed && base64_decode_strict(text.substr(kTextPrefix.size()), b64);
  EnvelopeView view;
  const bool envelope_ok = base64_ok && !parse_envelope(b64, view);

  FUZZ_CHECK(static_cast<bool>(problem) == !envelope_ok, "verdict != prefix && base64 && parse_envelope");
  if (problem) {
    FUZZ_CHECK(problem.detail[0] != '\0', "a rejection has an empty detail");
    return 0;
  }
  FUZZ_CHECK(out == b64, "decoded bytes differ from base64_decode_strict");
  FUZZ_CHECK(text_form_length(out.size()) == size, "text_form_length of the decoded value");
  std::string again(text_form_length(out.size()), '\0');
  write_text_form(out, again.data());
  FUZZ_CHECK(again == text, "write_text_form(decode_text_form(t)) != t: the text form is not canonical");
  return 0;
}
