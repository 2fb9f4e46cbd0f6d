// libFuzzer harness: base64url_decode() and base64url_encode() (RFC 4648 section 5
// without padding), the codec of Azure Key Vault's wrapkey/unwrapkey values.
//
// Invariants (include/pg_envelope/encoding.hpp):
//   - decode(encode(x)) == x for any bytes x, and so does the encoding with its
//     padding completed ("Zg" and "Zg==");
//   - an accepted text t is exactly encode(decode(t)), optionally followed by the one
//     padding that completes its last quantum; nothing else is accepted;
//   - a rejected text leaves the output empty.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "pg_envelope/encoding.hpp"

using namespace pg_envelope;

namespace {

bool equal(const SecureBytes& a, const std::uint8_t* p, std::size_t n) {
  if (a.size() != n) return false;
  for (std::size_t i = 0; i < n; ++i)
    if (a.data()[i] != p[i]) return false;
  return true;
}

std::size_t padding_for(std::size_t unpadded_len) { return (4 - unpadded_len % 4) % 4; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // The input as text to decode.
  const std::string_view text = fuzz::as_text(data, size);
  SecureBytes out(3);  // stale content must not survive
  if (base64url_decode(text, out)) {
    const SecretString enc = base64url_encode(out.view());
    const std::string_view e = enc.view();
    const bool unpadded = text == e;
    const bool padded = text.size() == e.size() + padding_for(e.size()) && padding_for(e.size()) > 0 &&
                        text.substr(0, e.size()) == e &&
                        text.substr(e.size()).find_first_not_of('=') == std::string_view::npos;
    FUZZ_CHECK(unpadded || padded, "encode(decode(t)) is neither t nor t without its exact padding");
  } else {
    FUZZ_CHECK(out.empty(), "a rejected text left output behind");
  }

  // The input as bytes to encode.
  const SecretString enc = base64url_encode(ByteView(data, size));
  const std::string_view e = enc.view();
  FUZZ_CHECK(e.size() == size / 3 * 4 + (size % 3 == 0 ? 0 : size % 3 + 1), "encoded length");
  FUZZ_CHECK(e.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
                 std::string_view::npos,
             "the encoding left the URL-safe alphabet or padded");
  SecureBytes back;
  FUZZ_CHECK(base64url_decode(e, back), "an encoding was rejected");
  FUZZ_CHECK(equal(back, data, size), "decode(encode(x)) != x");
  if (padding_for(e.size()) > 0) {
    std::string padded(e);
    padded.append(padding_for(e.size()), '=');
    SecureBytes back_padded;
    FUZZ_CHECK(base64url_decode(padded, back_padded), "an exactly padded encoding was rejected");
    FUZZ_CHECK(equal(back_padded, data, size), "decode(encode(x) + padding) != x");
  }
  return 0;
}
