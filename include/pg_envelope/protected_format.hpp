// The stored form of a protected column's value (envelope.protected_text, _bytea,
// _jsonb): docs/protect.md specifies it byte by byte. Pure C++.
//
// A protected value is either *sealed* (encrypted, bound to its column and row) or
// *unsealed* (plaintext that the column's trigger seals before it is stored; a CHECK
// constraint keeps unsealed values out of the table). Sealed (all integers big-endian):
//
//   offset size  field
//   0      1     0x00 (a text value never contains NUL, so plaintext text never starts so)
//   1      1     format version 1
//   2      1     plaintext type (1 text, 2 bytea, 3 jsonb)
//   3      4     protection id (the column's, chosen by protect_column)
//   7      4     blind-index key id (0: no blind index)
//   11     1     blind-index length b (0..32)
//   12     b     blind index: HMAC-SHA256 of the plaintext, first b bytes
//   ..     1     key name length k (1..63)
//   ..     k     key name (the row's key)
//   ..     1     row context flag (0: none, 1: present)
//   ..     2     row context length c
//   ..     c     row context (e.g. the primary key's text)
//   ..     n     an envelope v1 (envelope_format.hpp) of the plaintext whose context
//                is every byte above: the envelope authenticates all of them.
//
// Unsealed: text is the plaintext itself; bytea and jsonb are 0x01 then the bytes
// (jsonb: its canonical text). The text form of a sealed value is "penv1:" and
// canonical base64; anything else typed into a protected column is plaintext.
#pragma once

#include <cstdint>
#include <string_view>

#include "pg_envelope/envelope_format.hpp"

namespace pg_envelope {

inline constexpr std::uint8_t kSealedMarker = 0x00;
inline constexpr std::uint8_t kUnsealedMarker = 0x01;  // bytea and jsonb only
inline constexpr std::uint8_t kProtectedV1 = 1;
inline constexpr std::size_t kMaxBlindIndex = 32;
inline constexpr std::string_view kProtectedTextPrefix = "penv1:";

struct SealedView {
  PlainType type = PlainType::kText;
  std::uint32_t protection_id = 0;
  std::uint32_t blind_key_id = 0;
  ByteView blind;
  std::string_view key_name;
  bool has_context = false;
  std::string_view context;
  ByteView prefix;    // bytes 0 .. start of the envelope: the envelope's context
  ByteView envelope;  // an envelope v1
};

// Whether a stored value is sealed (first byte 0x00, for every type).
inline bool is_sealed(ByteView v) noexcept { return !v.empty() && v[0] == kSealedMarker; }

// Structural checks only (never decrypts); the spans point into `bytes`.
FormatProblem parse_sealed(ByteView bytes, PlainType type, SealedView& out) noexcept;

// The protection id and blind index of a sealed value, read in place without the full
// check (for comparisons of stored values); false when the head is malformed.
bool sealed_blind(ByteView bytes, PlainType type, std::uint32_t& protection_id, ByteView& blind) noexcept;

// The prefix of a sealed value (everything before the envelope).
Bytes sealed_prefix(PlainType type, std::uint32_t protection_id, std::uint32_t blind_key_id, ByteView blind,
                    std::string_view key_name, bool has_context, std::string_view context);

// The plaintext of an unsealed value (text: all of it; bytea/jsonb: after 0x01).
// False when `v` is neither sealed nor a well-formed unsealed value of `type`.
bool unsealed_plaintext(ByteView v, PlainType type, ByteView& plaintext) noexcept;

// "penv1:" + base64 of a sealed value, and its strict decoding (a problem when `text`
// starts with the prefix but is not a valid sealed value of `type`; `matched` false
// when it does not start with the prefix at all: then it is plaintext).
std::size_t protected_text_form_length(std::size_t sealed_len) noexcept;
void write_protected_text_form(ByteView sealed, char* out) noexcept;
FormatProblem decode_protected_text_form(std::string_view text, PlainType type, Bytes& out, bool& matched);

}  // namespace pg_envelope
