// Standard base64 into and out of wiping storage (see include/pg_envelope/base64_secret.hpp).
#include "pg_envelope/base64_secret.hpp"

#include <cstdint>

namespace pg_envelope {

namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr int kPad = 64;
constexpr int kBad = 65;

// The 6-bit value of a character, kPad for '=', kBad for anything else.
int value_of(char c) noexcept {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  if (c == '=') return kPad;
  return kBad;
}

}  // namespace

SecretString base64_encode_secret(ByteView in) {
  SecretString out;
  out.reserve((in.size() + 2) / 3 * 4);
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
    quad[2] = rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
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
    for (int k = 0; k < 4; ++k) c[k] = value_of(in[i + k]);
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

}  // namespace pg_envelope
