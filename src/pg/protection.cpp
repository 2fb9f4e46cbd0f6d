// Sealing and opening protected values (see protection.hpp).
#include "guard.hpp"

#include <cstring>
#include <map>
#include <utility>

#include "audit.hpp"
#include "dek_resolver.hpp"
#include "key_access.hpp"
#include "key_catalog.hpp"
#include "key_errors.hpp"
#include "key_generation.hpp"
#include "pg_envelope/crypto.hpp"
#include "pg_envelope/encoding.hpp"
#include "format_setting.hpp"
#include "protection.hpp"
#include "secret_memory.hpp"

namespace pg_envelope::protection {

namespace {

// Blind-index keys of this backend: (blind key id, protection id) -> 32 bytes, valid
// for one key generation.
std::map<std::pair<std::uint32_t, std::uint32_t>, HmacSha256>& blind_keys() {
  static std::map<std::pair<std::uint32_t, std::uint32_t>, HmacSha256> m;
  static std::uint64_t generation = 0;
  if (generation != key_generation()) {
    m.clear();
    generation = key_generation();
  }
  return m;
}

HmacSha256& blind_key(std::uint32_t blind_key_id, std::uint32_t protection_id) {
  auto& m = blind_keys();
  auto it = m.find({blind_key_id, protection_id});
  if (it != m.end()) return it->second;
  // The first DEK of the blind key: stable across rotations of that key.
  CachedDek& dek = dek_resolver::internal(DekId{blind_key_id, 1});
  static constexpr std::string_view kLabel = "pg_envelope blind index v1";
  std::uint8_t info[kLabel.size() + 4];
  std::memcpy(info, kLabel.data(), kLabel.size());
  store_be32(info + kLabel.size(), protection_id);
  SecureBytes k(32);
  hkdf_sha256(dek.blind_seed.view(), {}, {info, sizeof info}, k.span());
  return m.emplace(std::make_pair(blind_key_id, protection_id), HmacSha256(k.view())).first->second;
}

[[noreturn]] void unauthentic(const std::string& key_name) {
  throw Error(sqlstate::kDataException, "could not open a protected value of key \"" + key_name + "\"",
              "The value failed authentication: it was modified, or its stored form was assembled by hand.",
              "");
}

Opened open_with(CachedDek& dek, const SealedView& v) {
  EnvelopeView env;
  if (parse_envelope(v.envelope, env) || dek.key_name != v.key_name) unauthentic(dek.key_name);
  Bytes aad;
  build_aad(env.header_bytes, v.type, true,
            std::string_view(reinterpret_cast<const char*>(v.prefix.data()), v.prefix.size()), aad);
  Opened o;
  o.size = env.ciphertext.size();
  SecretChunk* chunk = nullptr;
  o.data = static_cast<std::uint8_t*>(secret_palloc(o.size + 1, &chunk));
  o.chunk = chunk;
  if (!dek.aead.open({env.header.nonce, kGcmNonceSize}, aad, env.ciphertext, env.tag.data(), o.data)) {
    release(o);
    audit::note(dek.id, dek.key_name, audit::kFailure);
    unauthentic(dek.key_name);
  }
  o.data[o.size] = 0;
  return o;
}

DekId dek_of(const SealedView& v) {
  EnvelopeView env;
  if (parse_envelope(v.envelope, env)) throw Error(sqlstate::kDataException, "protected value is malformed");
  return env.header.dek;
}

}  // namespace

void blind_index(std::uint32_t blind_key_id, std::uint32_t protection_id, ByteView plaintext, std::uint8_t len,
                 std::uint8_t* out) {
  std::uint8_t mac[32];
  blind_key(blind_key_id, protection_id).mac(plaintext, mac);
  std::memcpy(out, mac, len);
  secure_zero(mac, sizeof mac);
}

struct varlena* seal(PlainType type, const Binding& b, ByteView plaintext) {
  audit::ColumnScope column(b.protection_id);
  CachedDek& dek = dek_resolver::for_encrypt(b.key_name, key_access::kEncrypt);
  std::uint8_t blind[kMaxBlindIndex];
  if (b.blind_key_id != 0) blind_index(b.blind_key_id, b.protection_id, plaintext, b.blind_bytes, blind);
  Bytes prefix = sealed_prefix(type, b.protection_id, b.blind_key_id,
                               {blind, b.blind_key_id != 0 ? b.blind_bytes : std::size_t{0}}, b.key_name,
                               b.has_context, b.context);
  EnvelopeHeader h;
  h.format = write_format();
  h.dek = dek.id;
  std::size_t total = VARHDRSZ + prefix.size() + envelope_overhead(h) + plaintext.size();
  auto* out = static_cast<struct varlena*>(pg_alloc(total));
  SET_VARSIZE(out, total);
  auto* p = reinterpret_cast<std::uint8_t*>(VARDATA(out));
  std::memcpy(p, prefix.data(), prefix.size());
  Bytes aad;
  seal_envelope(h, dek.aead, type, true, std::string_view(reinterpret_cast<const char*>(prefix.data()), prefix.size()),
                plaintext, p + prefix.size(), aad);
  return out;
}

bool bound_as(const SealedView& v, const Binding& b) noexcept {
  return v.protection_id == b.protection_id && v.key_name == b.key_name && v.has_context == b.has_context &&
         v.context == b.context && v.blind_key_id == b.blind_key_id &&
         v.blind.size() == (b.blind_key_id != 0 ? b.blind_bytes : 0u);
}

Opened open(const SealedView& v, bool check_privilege, std::uint8_t privilege) {
  audit::ColumnScope column(v.protection_id);
  DekId id = dek_of(v);
  CachedDek& dek = check_privilege
                       ? dek_resolver::for_decrypt(id, static_cast<key_access::Privilege>(privilege))
                       : dek_resolver::internal(id);
  return open_with(dek, v);
}

Opened open_if_allowed(const SealedView& v) {
  audit::ColumnScope column(v.protection_id);
  CachedDek* dek = dek_resolver::if_allowed(dek_of(v), key_access::kReadProtected);
  if (dek == nullptr) return {};
  return open_with(*dek, v);
}

DekId dek_id_of(const SealedView& v) { return dek_of(v); }

struct varlena* reseal(PlainType type, const SealedView& v) {
  Binding b;
  b.protection_id = v.protection_id;
  b.key_name = std::string(v.key_name);
  b.has_context = v.has_context;
  b.context = std::string(v.context);
  b.blind_key_id = v.blind_key_id;
  b.blind_bytes = static_cast<std::uint8_t>(v.blind.size());
  Opened o = open(v, false, 0);
  struct varlena* out;
  try {
    out = seal(type, b, {o.data, o.size});
  } catch (...) {
    release(o);
    throw;
  }
  release(o);
  return out;
}

void release(Opened& o) noexcept {
  release_secret(static_cast<SecretChunk*>(o.chunk));
  o = Opened{};
}

void require_search(std::uint32_t blind_key_id) {
  static std::uint32_t checked_key = 0;
  static Oid checked_user = InvalidOid;
  static std::uint64_t checked_epoch = 0;
  if (checked_key == blind_key_id && checked_user == GetUserId() && checked_epoch == key_access::role_epoch())
    return;
  std::optional<KeyRecord> key = key_catalog::key_by_id(blind_key_id);
  if (!key)
    throw Error(sqlstate::kUndefinedObject, "the blind-index key of a protected column does not exist",
                "Key id " + std::to_string(blind_key_id) + " is not in envelope.key.");
  key_access::require(key->name, key_access::kDecrypt);
  checked_key = blind_key_id;
  checked_user = GetUserId();
  checked_epoch = key_access::role_epoch();
}

}  // namespace pg_envelope::protection
