// Sealing and opening the values of protected columns (protected_format.hpp has the
// stored form; docs/protect.md the model). A column's trigger seals plaintext under
// the row's key and binding; the type's output function opens a sealed value for a
// role that holds decrypt on its key (superusers only when granted explicitly).
#pragma once

#include "pg_includes.hpp"

#include <cstdint>
#include <string>
#include <string_view>

#include "pg_envelope/dek_cache.hpp"
#include "pg_envelope/protected_format.hpp"

namespace pg_envelope::protection {

// What a sealed value of one row of one column is bound to.
struct Binding {
  std::uint32_t protection_id = 0;
  std::string key_name;  // the row's key
  bool has_context = false;
  std::string context;  // the row context (e.g. the primary key's text)
  std::uint32_t blind_key_id = 0;  // 0: no blind index
  std::uint8_t blind_bytes = 0;
};

// Seals `plaintext` (the canonical plaintext of `type`) for `b`: the current user must
// hold encrypt on b.key_name. Returns a palloc'd varlena.
struct varlena* seal(PlainType type, const Binding& b, ByteView plaintext);

// Whether a sealed value is bound exactly as `b` says (no crypto).
bool bound_as(const SealedView& v, const Binding& b) noexcept;

// Opens a sealed value into a palloc'd buffer watched by a memory-context callback
// (secret_memory.hpp); the caller releases it. `check`: the privilege the current user
// must hold on the value's key (kRequire semantics: Error 42501 otherwise), or none
// for the extension's own re-binding. Error 22000 when the value fails authentication.
struct Opened {
  std::uint8_t* data = nullptr;
  std::size_t size = 0;
  void* chunk = nullptr;  // SecretChunk*
};
Opened open(const SealedView& v, bool check_privilege, std::uint8_t privilege);

// Opens for display: the plaintext when the current user holds kReadProtected on the
// key (and the key is not destroyed), else `opened.data == nullptr`.
Opened open_if_allowed(const SealedView& v);

void release(Opened& o) noexcept;

// The DEK (key id, version) a sealed value's envelope names.
DekId dek_id_of(const SealedView& v);

// The value sealed again with the same binding under the current DEK version of its
// key (the current user needs encrypt on it; nothing is revealed to it).
struct varlena* reseal(PlainType type, const SealedView& v);

// The blind index of `plaintext` for a column: HMAC-SHA256 under a key derived from
// the blind key's first DEK (never the DEK itself) and the protection id, first `len`
// bytes into `out`.
void blind_index(std::uint32_t blind_key_id, std::uint32_t protection_id, ByteView plaintext, std::uint8_t len,
                 std::uint8_t* out);

// Error 42501 unless the current user may search the column by plaintext: decrypt on
// its blind key (an equality test is a plaintext oracle).
void require_search(std::uint32_t blind_key_id);

}  // namespace pg_envelope::protection
