// envelope.encrypt_field() and envelope.decrypt_field() for text, bytea and jsonb.
//
// The hot path per value: detoast, one cache lookup (usually the last DEK used), one
// AES-256-GCM pass straight into the palloc'd result. Plaintext copies that we make
// (detoasted inputs, jsonb text) are zeroed before they are freed, and are watched
// by a memory-context reset callback (secret_memory.hpp) so that they are zeroed on
// every error path as well. No error here quotes a value: the JSON parser's errors
// (which would) are replaced by our own.
#include "pg/guard.hpp"

extern "C" {
#include "mb/pg_wchar.h"
#include "utils/jsonb.h"
}

#include <cstring>
#include <optional>
#include <unordered_map>

#include "pg/audit.hpp"
#include "pg/dek_resolver.hpp"
#include "pg/format_setting.hpp"
#include "pg/key_catalog.hpp"
#include "pg/key_errors.hpp"
#include "pg/key_generation.hpp"
#include "pg/secret_memory.hpp"
#include "pg_envelope/envelope_format.hpp"
#include "pg/shared_memory.hpp"

using namespace pg_envelope;

namespace {

struct VarlenaArg {
  struct varlena* ptr = nullptr;
  SecretChunk* copy = nullptr;  // detoasting made a private copy, zeroed and freed by wipe_copy()
  ByteView bytes() const {
    return {reinterpret_cast<const std::uint8_t*>(VARDATA_ANY(ptr)), VARSIZE_ANY_EXHDR(ptr)};
  }
  std::string_view text() const { return {VARDATA_ANY(ptr), VARSIZE_ANY_EXHDR(ptr)}; }
  void wipe_copy() noexcept {
    release_secret(copy);
    copy = nullptr;
  }
};

// `secret`: the argument is plaintext, so a detoasted copy is watched and zeroed.
VarlenaArg detoast_arg(FunctionCallInfo fcinfo, int n, bool secret = false) {
  Datum d = PG_GETARG_DATUM(n);
  VarlenaArg a;
  auto* raw = reinterpret_cast<struct varlena*>(DatumGetPointer(d));
  if (!VARATT_IS_EXTERNAL(raw) && !VARATT_IS_COMPRESSED(raw)) {
    a.ptr = raw;  // in-line and uncompressed: usable as it is, no call needed
    return a;
  }
  a.ptr = pg_call([d] { return PG_DETOAST_DATUM_PACKED(d); });
  if (secret && a.ptr != raw) a.copy = guard_secret(a.ptr, VARSIZE_ANY(a.ptr));
  return a;
}

// The AAD buffer is reused across calls to keep the per-row path allocation-free.
Bytes& aad_buffer() {
  static Bytes aad;
  return aad;
}

Datum encrypt_bytes(CachedDek& dek, PlainType type, ByteView plaintext, bool has_context, std::string_view context) {
  EnvelopeHeader h;
  h.format = write_format();
  h.dek = dek.id;
  std::size_t total = VARHDRSZ + envelope_overhead(h) + plaintext.size();
  auto* out = static_cast<struct varlena*>(pg_alloc(total));
  SET_VARSIZE(out, total);
  seal_envelope(h, dek.aead, type, has_context, context, plaintext, reinterpret_cast<std::uint8_t*>(VARDATA(out)),
                aad_buffer());
  return PointerGetDatum(out);
}

Datum encrypt_field(FunctionCallInfo fcinfo, PlainType type) {
  if (PG_ARGISNULL(0)) PG_RETURN_NULL();
  if (PG_ARGISNULL(1))
    throw Error(sqlstate::kNullValueNotAllowed, "key name must not be null",
                "envelope.encrypt_field() needs the name of the key to encrypt with.");
  require_preloaded();
  VarlenaArg key_name = detoast_arg(fcinfo, 1);
  bool has_context = !PG_ARGISNULL(2);
  VarlenaArg context;
  if (has_context) context = detoast_arg(fcinfo, 2);
  CachedDek& dek = dek_resolver::for_encrypt(key_name.text(), key_access::kEncrypt);

  if (type == PlainType::kJsonb) {
    // jsonb is encrypted in its canonical text form, which is stable across versions.
    Datum value = PG_GETARG_DATUM(0);
    char* json = DatumGetCString(pg_call([value] { return DirectFunctionCall1(jsonb_out, value); }));
    std::size_t n = std::strlen(json);
    SecretChunk* staging = nullptr;
    try {
      staging = guard_secret(json, n + 1);
    } catch (...) {
      secure_zero(json, n);
      throw;
    }
    Datum result;
    try {
      result = encrypt_bytes(dek, type, {reinterpret_cast<const std::uint8_t*>(json), n}, has_context,
                             has_context ? context.text() : std::string_view());
    } catch (...) {
      release_secret(staging);
      throw;
    }
    release_secret(staging);
    return result;
  }
  VarlenaArg value = detoast_arg(fcinfo, 0, /*secret=*/true);
  Datum result;
  try {
    result = encrypt_bytes(dek, type, value.bytes(), has_context, has_context ? context.text() : std::string_view());
  } catch (...) {
    value.wipe_copy();
    throw;
  }
  value.wipe_copy();
  return result;
}

Datum decrypt_field(FunctionCallInfo fcinfo, PlainType type) {
  if (PG_ARGISNULL(0)) PG_RETURN_NULL();
  require_preloaded();
  VarlenaArg value = detoast_arg(fcinfo, 0);
  EnvelopeView env;
  if (FormatProblem p = parse_envelope(value.bytes(), env))
    throw Error(sqlstate::kDataException, "stored value is not a valid pg_envelope ciphertext", p.detail);
  bool has_context = !PG_ARGISNULL(1);
  VarlenaArg context;
  if (has_context) context = detoast_arg(fcinfo, 1);
  CachedDek& dek = dek_resolver::for_decrypt(env.header.dek, key_access::kDecrypt);

  Bytes& aad = aad_buffer();
  build_aad(env.header_bytes, type, has_context, has_context ? context.text() : std::string_view(), aad);
  std::size_t n = env.ciphertext.size();
  // Room for a terminating NUL when the plaintext is jsonb text.
  auto* out = static_cast<struct varlena*>(pg_alloc(VARHDRSZ + n + 1));
  auto* plain = reinterpret_cast<std::uint8_t*>(VARDATA(out));
  if (!dek.aead.open({env.header.nonce, kGcmNonceSize}, aad, env.ciphertext, env.tag.data(), plain)) {
    pfree(out);
    audit::note(dek.id, dek.key_name, audit::kFailure);
    throw Error(sqlstate::kDataException,
                "could not decrypt value encrypted with key \"" + dek.key_name + "\" version " +
                    std::to_string(dek.id.version),
                "The value failed authentication: it was modified, was copied from another row or column "
                "(the context differs), or is being decrypted as a different type.",
                "Pass the same context and type that were used to encrypt it.");
  }
  // Text was valid in the encoding of the database it was encrypted in; restored
  // into a database with another encoding it may not be. Never return invalid text
  // (nor hand it to the JSON parser, whose errors would quote it).
  if (type != PlainType::kBytea &&
      !pg_verifymbstr(reinterpret_cast<const char*>(plain), static_cast<int>(n), /*noError=*/true)) {
    secure_zero(out, VARHDRSZ + n + 1);
    pfree(out);
    throw Error(sqlstate::kCharacterNotInRepertoire, "decrypted value is not valid in the database encoding \"" +
                             std::string(GetDatabaseEncodingName()) + "\"",
                "The value was encrypted in a database with another encoding (key \"" + dek.key_name + "\").",
                "Decrypt it in a database with the original encoding, or store it as encrypted_bytea.");
  }
  if (type != PlainType::kJsonb) {
    SET_VARSIZE(out, VARHDRSZ + n);
    return PointerGetDatum(out);
  }
  plain[n] = '\0';
  char* json = reinterpret_cast<char*>(plain);
  SecretChunk* staging = nullptr;
  try {
    staging = guard_secret(out, VARHDRSZ + n + 1);
  } catch (...) {
    secure_zero(out, VARHDRSZ + n + 1);
    throw;
  }
  Datum result;
  try {
    result = pg_call([json] { return DirectFunctionCall1(jsonb_in, CStringGetDatum(json)); });
  } catch (const PgError& e) {
    // The parser's message, detail and context quote the text: drop them.
    FreeErrorData(e.data());
    release_secret(staging);
    throw Error(sqlstate::kInvalidTextRepresentation,
                "decrypted value of key \"" + dek.key_name + "\" is not valid jsonb in this database",
                "The JSON text was authenticated, but this server's JSON parser refuses it (for example a "
                "\\u escape that has no equivalent in the database encoding).",
                "Decrypt it as it was stored in a database with the original encoding and version.");
  } catch (...) {
    release_secret(staging);
    throw;
  }
  release_secret(staging);
  return result;
}

// Whether `dek` is the current DEK of `target` (NULL: of its own key).
bool on_current(DekId dek, FunctionCallInfo fcinfo, int target_arg) {
  std::uint32_t key_id = dek.key_id;
  if (!PG_ARGISNULL(target_arg)) {
    VarlenaArg target = detoast_arg(fcinfo, target_arg);
    key_id = key_catalog::key_id(target.text());
    if (key_id == 0) throw_no_such_key();
  }
  return dek.key_id == key_id && dek.version == key_catalog::current_version(key_id);
}

// on_current_key(value encrypted_*, key text DEFAULT NULL) RETURNS boolean: whether the
// value is encrypted with the current DEK version of `key` (NULL: of its own key).
Datum on_current_key(FunctionCallInfo fcinfo) {
  if (PG_ARGISNULL(0)) PG_RETURN_NULL();
  require_preloaded();
  VarlenaArg value = detoast_arg(fcinfo, 0);
  EnvelopeView env;
  if (FormatProblem p = parse_envelope(value.bytes(), env))
    throw Error(sqlstate::kDataException, "stored value is not a valid pg_envelope ciphertext", p.detail);
  PG_RETURN_BOOL(on_current(env.header.dek, fcinfo, 1));
}

// reencrypt_field(value encrypted_*, context text DEFAULT NULL, key text DEFAULT NULL):
// the value encrypted again, with the same context, under the current DEK version of
// `key` (NULL: its own key); returned as it is when it is there already. Within one key
// the caller needs encrypt on it (nothing is revealed); to another key, decrypt on the
// value's key and encrypt on the new one (as decrypt_field + encrypt_field would).
Datum reencrypt_field(FunctionCallInfo fcinfo, PlainType type) {
  if (PG_ARGISNULL(0)) PG_RETURN_NULL();
  require_preloaded();
  VarlenaArg value = detoast_arg(fcinfo, 0);
  EnvelopeView env;
  if (FormatProblem p = parse_envelope(value.bytes(), env))
    throw Error(sqlstate::kDataException, "stored value is not a valid pg_envelope ciphertext", p.detail);
  if (on_current(env.header.dek, fcinfo, 2)) PG_RETURN_DATUM(PG_GETARG_DATUM(0));
  bool has_context = !PG_ARGISNULL(1);
  VarlenaArg context;
  if (has_context) context = detoast_arg(fcinfo, 1);
  bool same_key = PG_ARGISNULL(2);
  std::string target_name;
  if (!same_key) {
    VarlenaArg target = detoast_arg(fcinfo, 2);
    target_name = std::string(target.text());
    same_key = key_catalog::key_id(target_name) == env.header.dek.key_id;
  }
  CachedDek& old_dek = same_key ? dek_resolver::internal(env.header.dek)
                                : dek_resolver::for_decrypt(env.header.dek, key_access::kDecrypt);
  if (same_key) target_name = old_dek.key_name;
  Bytes aad;
  build_aad(env.header_bytes, type, has_context, has_context ? context.text() : std::string_view(), aad);
  std::size_t n = env.ciphertext.size();
  SecretChunk* chunk = nullptr;
  auto* plain = static_cast<std::uint8_t*>(secret_palloc(n + 1, &chunk));
  if (!old_dek.aead.open({env.header.nonce, kGcmNonceSize}, aad, env.ciphertext, env.tag.data(), plain)) {
    release_secret(chunk);
    audit::note(old_dek.id, old_dek.key_name, audit::kFailure);
    throw Error(sqlstate::kDataException,
                "could not decrypt value encrypted with key \"" + old_dek.key_name + "\" version " +
                    std::to_string(old_dek.id.version),
                "The value failed authentication: it was modified, was copied from another row or column "
                "(the context differs), or is being re-encrypted as a different type.",
                "Pass the same context and type that were used to encrypt it.");
  }
  Datum result;
  try {
    CachedDek& new_dek = dek_resolver::for_encrypt(target_name, key_access::kEncrypt);
    result = encrypt_bytes(new_dek, type, {plain, n}, has_context, has_context ? context.text() : std::string_view());
  } catch (...) {
    release_secret(chunk);
    throw;
  }
  release_secret(chunk);
  return result;
}

// key_version_of(value encrypted_*, key text) RETURNS integer: the DEK version when the
// value is encrypted under `key`, else NULL (no decryption, no privilege on the key).
Datum key_version_of(FunctionCallInfo fcinfo) {
  if (PG_ARGISNULL(0) || PG_ARGISNULL(1)) PG_RETURN_NULL();
  require_preloaded();
  VarlenaArg value = detoast_arg(fcinfo, 0);
  EnvelopeView env;
  if (FormatProblem p = parse_envelope(value.bytes(), env))
    throw Error(sqlstate::kDataException, "stored value is not a valid pg_envelope ciphertext", p.detail);
  VarlenaArg key = detoast_arg(fcinfo, 1);
  std::uint32_t key_id = key_catalog::key_id(key.text());
  if (key_id == 0) throw_no_such_key();
  if (env.header.dek.key_id != key_id) PG_RETURN_NULL();
  PG_RETURN_INT32(static_cast<std::int32_t>(env.header.dek.version));
}

}  // namespace

PGENV_FUNCTION(envelope_key_version_of) { return key_version_of(fcinfo); }
PGENV_FUNCTION(envelope_on_current_key) { return on_current_key(fcinfo); }
PGENV_FUNCTION(envelope_reencrypt_text) { return reencrypt_field(fcinfo, PlainType::kText); }
PGENV_FUNCTION(envelope_reencrypt_bytea) { return reencrypt_field(fcinfo, PlainType::kBytea); }
PGENV_FUNCTION(envelope_reencrypt_jsonb) { return reencrypt_field(fcinfo, PlainType::kJsonb); }

PGENV_FUNCTION(envelope_encrypt_text) { return encrypt_field(fcinfo, PlainType::kText); }
PGENV_FUNCTION(envelope_encrypt_bytea) { return encrypt_field(fcinfo, PlainType::kBytea); }
PGENV_FUNCTION(envelope_encrypt_jsonb) { return encrypt_field(fcinfo, PlainType::kJsonb); }
PGENV_FUNCTION(envelope_decrypt_text) { return decrypt_field(fcinfo, PlainType::kText); }
PGENV_FUNCTION(envelope_decrypt_bytea) { return decrypt_field(fcinfo, PlainType::kBytea); }
PGENV_FUNCTION(envelope_decrypt_jsonb) { return decrypt_field(fcinfo, PlainType::kJsonb); }
