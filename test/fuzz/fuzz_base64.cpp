// libFuzzer harness: base64_decode_strict() and base64_encode() (RFC 4648 section 4,
// the standard alphabet with padding): the text form's decoder, and the decoder of
// the base64 fields in AWS KMS, GCP KMS and Vault responses.
//
// Invariants, which together say that strict decoding is exactly the inverse of
// encoding:
//   - decode(encode(x)) == x for any bytes x (every encoding is accepted);
//   - an accepted text t is exactly encode(decode(t)) (nothing else is accepted: no
//     whitespace, no missing or extra padding, no non-zero unused bits), with the
//     length 3/4 of the text less the padding.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "pg_envelope/encoding.hpp"

using namespace pg_envelope;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // The input as text to decode.
  const std::string_view text = fuzz::as_text(data, size);
  Bytes out = {0xEE};
  if (base64_decode_strict(text, out)) {
    FUZZ_CHECK(size % 4 == 0, "accepted a length that is not a multiple of 4");
    const std::size_t pad = size == 0 ? 0 : (text[size - 1] == '=') + (text[size - 2] == '=');
    FUZZ_CHECK(out.size() == size / 4 * 3 - pad, "decoded length");
    FUZZ_CHECK(base64_encode(out) == text, "encode(decode(t)) != t: a non-canonical text was accepted");
  }

  // The input as bytes to encode.
  const std::string enc = base64_encode(ByteView(data, size));
  FUZZ_CHECK(enc.size() == (size + 2) / 3 * 4, "encoded length");
  Bytes back = {0xEE};
  FUZZ_CHECK(base64_decode_strict(enc, back), "an encoding was rejected");
  FUZZ_CHECK(back == Bytes(data, data + size), "decode(encode(x)) != x");
  return 0;
}
