// Base64, base64url and their strict decoders (see include/pg_envelope/encoding.hpp),
// by hand: OpenSSL's encoder knows only the standard alphabet, always pads, and
// writes through buffers of its own that nobody wipes.
#include "pg_envelope/encoding.hpp"

namespace pg_envelope {

namespace {

constexpr char kBase64Alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr char kBase64UrlAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// Standard base64 for public values: 0..63 for alphabet characters, 64 for '=', 255
// for anything else.
struct DecodeTable {
  std::uint8_t v[256];
  constexpr DecodeTable() : v() {
    for (auto& x : v) x = 255;
    for (int i = 0; i < 64; ++i) v[static_cast<unsigned char>(kBase64Alphabet[i])] = static_cast<std::uint8_t>(i);
    v[static_cast<unsigned char>('=')] = 64;
  }
};
constexpr DecodeTable kDecode{};

// Standard base64 for secrets: the 6-bit value of a character, kPad for '=', kBad
// for anything else.
constexpr int kPad = 64;
constexpr int kBad = 65;

int base64_value(char c) noexcept {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  if (c == '=') return kPad;
  return kBad;
}

// The 6-bit value of a base64url character, or -1.
int base64url_value(char c) noexcept {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

}  // namespace

// ---------------------------------------------------------------- base64, public values

std::size_t base64_length(std::size_t n) noexcept { return (n + 2) / 3 * 4; }

void base64_write(ByteView in, char* out) noexcept {
  std::size_t i = 0, o = 0;
  for (; i + 3 <= in.size(); i += 3) {
    std::uint32_t v = (in[i] << 16) | (in[i + 1] << 8) | in[i + 2];
    out[o++] = kBase64Alphabet[(v >> 18) & 63];
    out[o++] = kBase64Alphabet[(v >> 12) & 63];
    out[o++] = kBase64Alphabet[(v >> 6) & 63];
    out[o++] = kBase64Alphabet[v & 63];
  }
  std::size_t rest = in.size() - i;
  if (rest == 1) {
    std::uint32_t v = in[i] << 16;
    out[o++] = kBase64Alphabet[(v >> 18) & 63];
    out[o++] = kBase64Alphabet[(v >> 12) & 63];
    out[o++] = '=';
    out[o++] = '=';
  } else if (rest == 2) {
    std::uint32_t v = (in[i] << 16) | (in[i + 1] << 8);
    out[o++] = kBase64Alphabet[(v >> 18) & 63];
    out[o++] = kBase64Alphabet[(v >> 12) & 63];
    out[o++] = kBase64Alphabet[(v >> 6) & 63];
    out[o++] = '=';
  }
}

std::string base64_encode(ByteView in) {
  std::string out(base64_length(in.size()), '\0');
  base64_write(in, out.data());
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

// ---------------------------------------------------------------- base64, secrets

SecretString base64_encode_secret(ByteView in) {
  SecretString out;
  out.reserve((in.size() + 2) / 3 * 4);
  char quad[4];
  std::size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    std::uint32_t v = (std::uint32_t{in[i]} << 16) | (std::uint32_t{in[i + 1]} << 8) | in[i + 2];
    quad[0] = kBase64Alphabet[(v >> 18) & 63];
    quad[1] = kBase64Alphabet[(v >> 12) & 63];
    quad[2] = kBase64Alphabet[(v >> 6) & 63];
    quad[3] = kBase64Alphabet[v & 63];
    out.append(quad, 4);
  }
  std::size_t rest = in.size() - i;
  if (rest > 0) {
    std::uint32_t v = std::uint32_t{in[i]} << 16;
    if (rest == 2) v |= std::uint32_t{in[i + 1]} << 8;
    quad[0] = kBase64Alphabet[(v >> 18) & 63];
    quad[1] = kBase64Alphabet[(v >> 12) & 63];
    quad[2] = rest == 2 ? kBase64Alphabet[(v >> 6) & 63] : '=';
    quad[3] = '=';
    out.append(quad, 4);
  }
  secure_zero(quad, sizeof quad);
  return out;
}

bool base64_decode_secret(std::string_view in, SecureBytes& out) {
  out.wipe();
  if (in.size() % 4 != 0) return false;
  std::size_t n = in.size() / 4 * 3;
  if (!in.empty() && in.back() == '=') n -= (in[in.size() - 2] == '=') ? 2 : 1;
  SecureBytes bytes(n);
  std::size_t o = 0;
  int c[4] = {0, 0, 0, 0};
  bool ok = true;
  for (std::size_t i = 0; ok && i < in.size(); i += 4) {
    for (int k = 0; k < 4; ++k) c[k] = base64_value(in[i + k]);
    bool last = (i + 4 == in.size());
    if (c[0] > 63 || c[1] > 63) {
      ok = false;
    } else if (c[2] == kPad) {  // "xx=="
      ok = last && c[3] == kPad && (c[1] & 0x0F) == 0;
      if (ok) bytes.data()[o++] = static_cast<std::uint8_t>((c[0] << 2) | (c[1] >> 4));
    } else if (c[3] == kPad) {  // "xxx="
      ok = last && c[2] <= 63 && (c[2] & 0x03) == 0;
      if (ok) {
        bytes.data()[o++] = static_cast<std::uint8_t>((c[0] << 2) | (c[1] >> 4));
        bytes.data()[o++] = static_cast<std::uint8_t>(((c[1] << 4) | (c[2] >> 2)) & 0xFF);
      }
    } else {
      ok = c[2] <= 63 && c[3] <= 63;
      if (ok) {
        bytes.data()[o++] = static_cast<std::uint8_t>((c[0] << 2) | (c[1] >> 4));
        bytes.data()[o++] = static_cast<std::uint8_t>(((c[1] << 4) | (c[2] >> 2)) & 0xFF);
        bytes.data()[o++] = static_cast<std::uint8_t>(((c[2] << 6) | c[3]) & 0xFF);
      }
    }
  }
  secure_zero(c, sizeof c);
  if (!ok || o != n) return false;  // o != n: padding in the middle made n wrong
  out = std::move(bytes);
  return true;
}

// ---------------------------------------------------------------- base64url

SecretString base64url_encode(ByteView in) {
  SecretString out;
  char quad[4];
  std::size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    std::uint32_t v = (std::uint32_t{in[i]} << 16) | (std::uint32_t{in[i + 1]} << 8) | in[i + 2];
    quad[0] = kBase64UrlAlphabet[(v >> 18) & 63];
    quad[1] = kBase64UrlAlphabet[(v >> 12) & 63];
    quad[2] = kBase64UrlAlphabet[(v >> 6) & 63];
    quad[3] = kBase64UrlAlphabet[v & 63];
    out.append(quad, 4);
  }
  std::size_t rest = in.size() - i;
  if (rest > 0) {
    std::uint32_t v = std::uint32_t{in[i]} << 16;
    if (rest == 2) v |= std::uint32_t{in[i + 1]} << 8;
    quad[0] = kBase64UrlAlphabet[(v >> 18) & 63];
    quad[1] = kBase64UrlAlphabet[(v >> 12) & 63];
    quad[2] = kBase64UrlAlphabet[(v >> 6) & 63];
    out.append(quad, rest + 1);
  }
  secure_zero(quad, sizeof quad);
  return out;
}

bool base64url_decode(std::string_view text, SecureBytes& out) {
  out.wipe();
  // Optional padding, only when it completes the last quantum exactly.
  if (!text.empty() && text.back() == '=') {
    if (text.size() % 4 != 0) return false;
    std::size_t pad = text[text.size() - 2] == '=' ? 2 : 1;
    text.remove_suffix(pad);
    if (!text.empty() && text.back() == '=') return false;  // "===" or more
  }
  if (text.size() % 4 == 1) return false;
  SecureBytes bytes(text.size() / 4 * 3 + (text.size() % 4 == 0 ? 0 : text.size() % 4 - 1));
  std::size_t o = 0;
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int v = base64url_value(c);
    if (v < 0) {
      acc = 0;
      return false;
    }
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes.data()[o++] = static_cast<std::uint8_t>(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  bool canonical = acc == 0;  // the unused low bits of a partial quantum are zero
  acc = 0;
  if (!canonical) return false;
  out = std::move(bytes);
  return true;
}

}  // namespace pg_envelope
