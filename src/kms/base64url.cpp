// Base64url without padding (see include/pg_envelope/base64url.hpp), by hand: the
// OpenSSL encoder knows only the standard alphabet and always pads.
#include "pg_envelope/base64url.hpp"

#include <cstdint>

namespace pg_envelope {

namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// The 6-bit value of a base64url character, or -1.
int value_of(char c) noexcept {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

}  // namespace

SecretString base64url_encode(ByteView in) {
  SecretString out;
  char quad[4];
  std::size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    std::uint32_t v = (std::uint32_t{in[i]} << 16) | (std::uint32_t{in[i + 1]} << 8) | in[i + 2];
    quad[0] = kAlphabet[(v >> 18) & 63];
    quad[1] = kAlphabet[(v >> 12) & 63];
    quad[2] = kAlphabet[(v >> 6) & 63];
    quad[3] = kAlphabet[v & 63];
    out.append(quad, 4);
  }
  std::size_t rest = in.size() - i;
  if (rest > 0) {
    std::uint32_t v = std::uint32_t{in[i]} << 16;
    if (rest == 2) v |= std::uint32_t{in[i + 1]} << 8;
    quad[0] = kAlphabet[(v >> 18) & 63];
    quad[1] = kAlphabet[(v >> 12) & 63];
    quad[2] = kAlphabet[(v >> 6) & 63];
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
    int v = value_of(c);
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
