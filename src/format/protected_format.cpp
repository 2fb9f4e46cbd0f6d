// The stored form of protected values (see protected_format.hpp).
#include "pg_envelope/protected_format.hpp"

#include "pg_envelope/encoding.hpp"

namespace pg_envelope {

namespace {

constexpr std::size_t kFixedHead = 12;  // marker, version, type, protection id, blind key id, blind length

FormatProblem problem(const char* detail) noexcept { return FormatProblem{detail}; }

}  // namespace

FormatProblem parse_sealed(ByteView b, PlainType type, SealedView& out) noexcept {
  out = SealedView{};
  if (b.size() < kFixedHead || b[0] != kSealedMarker) return problem("The value is not a sealed protected value.");
  if (b[1] != kProtectedV1) return problem("The value has an unknown protected-value format version.");
  if (b[2] != static_cast<std::uint8_t>(type)) return problem("The value was sealed for another plaintext type.");
  out.type = type;
  out.protection_id = load_be32(b.data() + 3);
  out.blind_key_id = load_be32(b.data() + 7);
  std::size_t blind_len = b[11];
  if (blind_len > kMaxBlindIndex || (out.blind_key_id == 0) != (blind_len == 0))
    return problem("The value's blind index is malformed.");
  std::size_t at = kFixedHead;
  if (b.size() < at + blind_len + 1) return problem("The value is truncated.");
  out.blind = b.subspan(at, blind_len);
  at += blind_len;
  std::size_t key_len = b[at++];
  if (key_len == 0 || key_len > 63 || b.size() < at + key_len + 3) return problem("The value's key name is malformed.");
  out.key_name = std::string_view(reinterpret_cast<const char*>(b.data() + at), key_len);
  at += key_len;
  std::uint8_t flag = b[at++];
  if (flag > 1) return problem("The value's row context is malformed.");
  out.has_context = flag == 1;
  std::size_t ctx_len = (std::size_t{b[at]} << 8) | b[at + 1];
  at += 2;
  if ((!out.has_context && ctx_len != 0) || b.size() < at + ctx_len) return problem("The value's row context is malformed.");
  out.context = std::string_view(reinterpret_cast<const char*>(b.data() + at), ctx_len);
  at += ctx_len;
  out.prefix = b.subspan(0, at);
  out.envelope = b.subspan(at);
  EnvelopeView env;
  if (parse_envelope(out.envelope, env)) return problem("The value's ciphertext is not a valid envelope.");
  return {};
}

bool sealed_blind(ByteView b, PlainType type, std::uint32_t& protection_id, ByteView& blind) noexcept {
  if (b.size() < kFixedHead || b[0] != kSealedMarker || b[1] != kProtectedV1 || b[2] != static_cast<std::uint8_t>(type))
    return false;
  std::size_t blind_len = b[11];
  if (blind_len > kMaxBlindIndex || b.size() < kFixedHead + blind_len) return false;
  if ((load_be32(b.data() + 7) == 0) != (blind_len == 0)) return false;
  protection_id = load_be32(b.data() + 3);
  blind = b.subspan(kFixedHead, blind_len);
  return true;
}

Bytes sealed_prefix(PlainType type, std::uint32_t protection_id, std::uint32_t blind_key_id, ByteView blind,
                    std::string_view key_name, bool has_context, std::string_view context) {
  Bytes p;
  p.reserve(kFixedHead + blind.size() + 1 + key_name.size() + 3 + context.size());
  p.push_back(kSealedMarker);
  p.push_back(kProtectedV1);
  p.push_back(static_cast<std::uint8_t>(type));
  std::uint8_t be[4];
  store_be32(be, protection_id);
  p.insert(p.end(), be, be + 4);
  store_be32(be, blind_key_id);
  p.insert(p.end(), be, be + 4);
  p.push_back(static_cast<std::uint8_t>(blind.size()));
  p.insert(p.end(), blind.begin(), blind.end());
  p.push_back(static_cast<std::uint8_t>(key_name.size()));
  p.insert(p.end(), key_name.begin(), key_name.end());
  p.push_back(has_context ? 1 : 0);
  p.push_back(static_cast<std::uint8_t>(context.size() >> 8));
  p.push_back(static_cast<std::uint8_t>(context.size() & 0xFF));
  p.insert(p.end(), context.begin(), context.end());
  return p;
}

bool unsealed_plaintext(ByteView v, PlainType type, ByteView& plaintext) noexcept {
  if (is_sealed(v)) return false;
  if (type == PlainType::kText) {
    plaintext = v;
    return true;
  }
  if (v.empty() || v[0] != kUnsealedMarker) return false;
  plaintext = v.subspan(1);
  return true;
}

std::size_t protected_text_form_length(std::size_t sealed_len) noexcept {
  return kProtectedTextPrefix.size() + base64_length(sealed_len);
}

void write_protected_text_form(ByteView sealed, char* out) noexcept {
  for (std::size_t i = 0; i < kProtectedTextPrefix.size(); ++i) out[i] = kProtectedTextPrefix[i];
  base64_write(sealed, out + kProtectedTextPrefix.size());
}

FormatProblem decode_protected_text_form(std::string_view text, PlainType type, Bytes& out, bool& matched) {
  matched = text.substr(0, kProtectedTextPrefix.size()) == kProtectedTextPrefix;
  if (!matched) return {};
  if (!base64_decode_strict(text.substr(kProtectedTextPrefix.size()), out))
    return problem("The text after \"penv1:\" is not canonical base64.");
  SealedView view;
  return parse_sealed(out, type, view);
}

}  // namespace pg_envelope
