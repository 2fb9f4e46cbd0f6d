// Envelope v1 encoding and parsing, and the canonical text form (see docs/format.md).
#include "pg_envelope/envelope_format.hpp"

#include <cstring>

#include "pg_envelope/encoding.hpp"

namespace pg_envelope {

FormatProblem parse_envelope(ByteView bytes, EnvelopeView& out) noexcept {
  if (bytes.size() < kEnvelopeOverhead)
    return {"The value is shorter than the smallest possible pg_envelope ciphertext."};
  if (bytes[0] != kFormatV1) return {"The value has an unknown pg_envelope format version."};
  if (bytes[1] != kAlgAes256Gcm) return {"The value names an unknown encryption algorithm."};
  EnvelopeHeader& h = out.header;
  h.format = bytes[0];
  h.algorithm = bytes[1];
  h.dek.key_id = load_be32(bytes.data() + 2);
  h.dek.version = load_be32(bytes.data() + 6);
  if (h.dek.key_id == 0 || h.dek.version == 0) return {"The value does not reference a valid data key."};
  std::memcpy(h.nonce, bytes.data() + 10, kGcmNonceSize);
  out.header_bytes = bytes.subspan(0, kHeaderSize);
  out.ciphertext = bytes.subspan(kHeaderSize, bytes.size() - kEnvelopeOverhead);
  out.tag = bytes.subspan(bytes.size() - kGcmTagSize);
  return {};
}

void write_header(const EnvelopeHeader& h, std::uint8_t out[kHeaderSize]) noexcept {
  out[0] = h.format;
  out[1] = h.algorithm;
  store_be32(out + 2, h.dek.key_id);
  store_be32(out + 6, h.dek.version);
  std::memcpy(out + 10, h.nonce, kGcmNonceSize);
}

void build_aad(ByteView header_bytes, PlainType type, bool has_context, std::string_view context, Bytes& aad) {
  aad.clear();
  aad.reserve(header_bytes.size() + 2 + context.size());
  aad.insert(aad.end(), header_bytes.begin(), header_bytes.end());
  aad.push_back(static_cast<std::uint8_t>(type));
  aad.push_back(has_context ? 1 : 0);
  if (has_context) aad.insert(aad.end(), context.begin(), context.end());
}

std::size_t text_form_length(std::size_t binary_len) noexcept { return kTextPrefix.size() + base64_length(binary_len); }

void write_text_form(ByteView bytes, char* out) noexcept {
  std::memcpy(out, kTextPrefix.data(), kTextPrefix.size());
  base64_write(bytes, out + kTextPrefix.size());
}

FormatProblem decode_text_form(std::string_view text, Bytes& out) {
  if (text.substr(0, kTextPrefix.size()) != kTextPrefix)
    return {"A pg_envelope ciphertext begins with \"env1:\"; encrypt plaintext with envelope.encrypt_field()."};
  if (!base64_decode_strict(text.substr(kTextPrefix.size()), out))
    return {"The text after \"env1:\" is not canonical base64."};
  EnvelopeView view;
  return parse_envelope(out, view);
}

}  // namespace pg_envelope
