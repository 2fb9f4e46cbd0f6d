// Envelope formats 1 and 2: encoding and parsing, and the canonical text form (see
// docs/format.md).
#include "pg_envelope/envelope_format.hpp"

#include <cstring>

#include "pg_envelope/encoding.hpp"

namespace pg_envelope {

namespace {

// Unsigned LEB128, shortest form, 1 to 5 bytes, value <= 2^32 - 1. Returns the bytes
// read, or 0 when `in` holds no such encoding.
std::size_t read_leb128(ByteView in, std::uint32_t& value) noexcept {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < in.size() && i < 5; ++i) {
    v |= static_cast<std::uint64_t>(in[i] & 0x7F) << (7 * i);
    if ((in[i] & 0x80) == 0) {
      if (i > 0 && in[i] == 0) return 0;  // a longer encoding than needed
      if (v > UINT32_MAX) return 0;
      value = static_cast<std::uint32_t>(v);
      return i + 1;
    }
  }
  return 0;
}

std::size_t leb128_size(std::uint32_t v) noexcept {
  std::size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

}  // namespace

FormatProblem parse_envelope(ByteView bytes, EnvelopeView& out) noexcept {
  if (bytes.size() < kMinEnvelopeSize)
    return {"The value is shorter than the smallest possible pg_envelope ciphertext."};
  EnvelopeHeader& h = out.header;
  std::size_t header = 0;
  if (bytes[0] == kFormatV1) {
    if (bytes.size() < kEnvelopeOverheadV1)
      return {"The value is shorter than the smallest possible pg_envelope ciphertext."};
    if (bytes[1] != kAlgAes256Gcm) return {"The value names an unknown encryption algorithm."};
    h.format = kFormatV1;
    h.algorithm = bytes[1];
    h.dek.key_id = load_be32(bytes.data() + 2);
    h.dek.version = load_be32(bytes.data() + 6);
    header = kHeaderSizeV1;
  } else if (bytes[0] == kFormatV2) {
    std::uint32_t version = 0;
    std::size_t v = read_leb128(bytes.subspan(5), version);
    if (v == 0) return {"The value's data key version is not validly encoded."};
    header = 5 + v + kGcmNonceSize;
    if (bytes.size() < header + kGcmTagSize)
      return {"The value is shorter than the smallest possible pg_envelope ciphertext."};
    h.format = kFormatV2;
    h.algorithm = kAlgAes256Gcm;
    h.dek.key_id = load_be32(bytes.data() + 1);
    h.dek.version = version;
  } else {
    return {"The value has an unknown pg_envelope format version."};
  }
  if (h.dek.key_id == 0 || h.dek.version == 0) return {"The value does not reference a valid data key."};
  std::memcpy(h.nonce, bytes.data() + header - kGcmNonceSize, kGcmNonceSize);
  out.header_bytes = bytes.subspan(0, header);
  out.ciphertext = bytes.subspan(header, bytes.size() - header - kGcmTagSize);
  out.tag = bytes.subspan(bytes.size() - kGcmTagSize);
  return {};
}

std::size_t header_size(const EnvelopeHeader& h) noexcept {
  return h.format == kFormatV1 ? kHeaderSizeV1 : 5 + leb128_size(h.dek.version) + kGcmNonceSize;
}

std::size_t write_header(const EnvelopeHeader& h, std::uint8_t* out) noexcept {
  if (h.format == kFormatV1) {
    out[0] = kFormatV1;
    out[1] = h.algorithm;
    store_be32(out + 2, h.dek.key_id);
    store_be32(out + 6, h.dek.version);
    std::memcpy(out + 10, h.nonce, kGcmNonceSize);
    return kHeaderSizeV1;
  }
  out[0] = kFormatV2;
  store_be32(out + 1, h.dek.key_id);
  std::size_t n = 5;
  std::uint32_t v = h.dek.version;
  do {
    std::uint8_t b = v & 0x7F;
    v >>= 7;
    out[n++] = v != 0 ? (b | 0x80) : b;
  } while (v != 0);
  std::memcpy(out + n, h.nonce, kGcmNonceSize);
  return n + kGcmNonceSize;
}

void build_aad(ByteView header_bytes, PlainType type, bool has_context, std::string_view context, Bytes& aad) {
  aad.clear();
  aad.reserve(header_bytes.size() + 2 + context.size());
  aad.insert(aad.end(), header_bytes.begin(), header_bytes.end());
  aad.push_back(static_cast<std::uint8_t>(type));
  aad.push_back(has_context ? 1 : 0);
  if (has_context) aad.insert(aad.end(), context.begin(), context.end());
}

void seal_envelope(EnvelopeHeader h, Aead& aead, PlainType type, bool has_context, std::string_view context,
                   ByteView plaintext, std::uint8_t* out, Bytes& aad) {
  random_nonce(h.nonce);
  std::size_t header = write_header(h, out);
  build_aad({out, header}, type, has_context, context, aad);
  aead.seal({h.nonce, kGcmNonceSize}, aad, plaintext, out + header, out + header + plaintext.size());
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
