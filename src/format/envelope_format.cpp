// Envelope v1 encoding and parsing, and the canonical text form (see docs/format.md).
#include "pg_envelope/envelope_format.hpp"

#include <cstring>

namespace pg_envelope {

namespace {

constexpr char kB64Alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// 0..63 for alphabet characters, 64 for '=', 255 for anything else.
struct DecodeTable {
  std::uint8_t v[256];
  constexpr DecodeTable() : v() {
    for (auto& x : v) x = 255;
    for (int i = 0; i < 64; ++i) v[static_cast<unsigned char>(kB64Alphabet[i])] = static_cast<std::uint8_t>(i);
    v[static_cast<unsigned char>('=')] = 64;
  }
};
constexpr DecodeTable kDecode{};

std::size_t b64_len(std::size_t n) noexcept { return (n + 2) / 3 * 4; }

void b64_write(ByteView in, char* out) noexcept {
  std::size_t i = 0, o = 0;
  for (; i + 3 <= in.size(); i += 3) {
    std::uint32_t v = (in[i] << 16) | (in[i + 1] << 8) | in[i + 2];
    out[o++] = kB64Alphabet[(v >> 18) & 63];
    out[o++] = kB64Alphabet[(v >> 12) & 63];
    out[o++] = kB64Alphabet[(v >> 6) & 63];
    out[o++] = kB64Alphabet[v & 63];
  }
  std::size_t rest = in.size() - i;
  if (rest == 1) {
    std::uint32_t v = in[i] << 16;
    out[o++] = kB64Alphabet[(v >> 18) & 63];
    out[o++] = kB64Alphabet[(v >> 12) & 63];
    out[o++] = '=';
    out[o++] = '=';
  } else if (rest == 2) {
    std::uint32_t v = (in[i] << 16) | (in[i + 1] << 8);
    out[o++] = kB64Alphabet[(v >> 18) & 63];
    out[o++] = kB64Alphabet[(v >> 12) & 63];
    out[o++] = kB64Alphabet[(v >> 6) & 63];
    out[o++] = '=';
  }
}

}  // namespace

std::string base64_encode(ByteView in) {
  std::string out(b64_len(in.size()), '\0');
  b64_write(in, out.data());
  return out;
}

bool base64_decode_strict(std::string_view in, Bytes& out) {
  out.clear();
  if (in.size() % 4 != 0) return false;
  out.reserve(in.size() / 4 * 3);
  for (std::size_t i = 0; i < in.size(); i += 4) {
    std::uint8_t c[4];
    for (int k = 0; k < 4; ++k) c[k] = kDecode.v[static_cast<unsigned char>(in[i + k])];
    bool last = (i + 4 == in.size());
    if (c[0] > 63 || c[1] > 63) return false;
    if (c[2] == 64) {  // "xx=="
      if (!last || c[3] != 64 || (c[1] & 0x0F) != 0) return false;
      out.push_back(static_cast<std::uint8_t>((c[0] << 2) | (c[1] >> 4)));
    } else if (c[3] == 64) {  // "xxx="
      if (!last || c[2] > 63 || (c[2] & 0x03) != 0) return false;
      out.push_back(static_cast<std::uint8_t>((c[0] << 2) | (c[1] >> 4)));
      out.push_back(static_cast<std::uint8_t>((c[1] << 4) | (c[2] >> 2)));
    } else {
      if (c[2] > 63 || c[3] > 63) return false;
      out.push_back(static_cast<std::uint8_t>((c[0] << 2) | (c[1] >> 4)));
      out.push_back(static_cast<std::uint8_t>((c[1] << 4) | (c[2] >> 2)));
      out.push_back(static_cast<std::uint8_t>((c[2] << 6) | c[3]));
    }
  }
  return true;
}

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

std::size_t text_form_length(std::size_t binary_len) noexcept { return kTextPrefix.size() + b64_len(binary_len); }

void write_text_form(ByteView bytes, char* out) noexcept {
  std::memcpy(out, kTextPrefix.data(), kTextPrefix.size());
  b64_write(bytes, out + kTextPrefix.size());
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
