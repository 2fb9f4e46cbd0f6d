// Fuzzes the base64 codecs the KMS providers decode secrets with: base64_decode_secret
// (standard alphabet, into SecureBytes) against base64_decode_strict, which it must
// match exactly, and base64url_decode (Azure), each with an encode round trip.
// Input: any bytes. Seeds: test/fuzz/corpus/kms_base64/.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_kms_support.hpp"
#include "pg_envelope/encoding.hpp"

using namespace pg_envelope;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  Bytes strict;
  SecureBytes secret;
  bool ok_strict = base64_decode_strict(text, strict);
  bool ok_secret = base64_decode_secret(text, secret);
  FUZZ_CHECK(ok_strict == ok_secret, "base64_decode_secret accepts exactly what base64_decode_strict accepts");
  if (ok_secret) {
    FUZZ_CHECK(secret.size() == strict.size() && std::equal(strict.begin(), strict.end(), secret.data()), "the same bytes as base64_decode_strict");
    FUZZ_CHECK(base64_encode_secret(secret.view()).view() == text, "an accepted text is the canonical encoding");  // canonical: one encoding per value
  } else {
    FUZZ_CHECK(secret.empty(), "a refusal leaves the output empty");
  }
  // Any bytes encode and decode back.
  ByteView raw(data, size);
  SecretString enc = base64_encode_secret(raw);
  FUZZ_CHECK(enc.view() == base64_encode(raw), "base64_encode_secret encodes as base64_encode");
  SecureBytes back;
  FUZZ_CHECK(base64_decode_secret(enc.view(), back) && back.size() == size &&
             std::equal(back.data(), back.data() + size, data), "encoded bytes decode back");

  SecureBytes url;
  if (base64url_decode(text, url)) {
    SecureBytes again;
    FUZZ_CHECK(base64url_decode(base64url_encode(url.view()).view(), again) && again.size() == url.size(), "base64url round trip");
  } else {
    FUZZ_CHECK(url.empty(), "a base64url refusal leaves the output empty");
  }
  return 0;
}
