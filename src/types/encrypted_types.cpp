// Input/output functions shared by envelope.encrypted_text, encrypted_bytea and
// encrypted_jsonb. They only check the envelope's structure and never need a key,
// so pg_dump, COPY and restore work without the master key or a KMS.
#include "pg/guard.hpp"

extern "C" {
#include "lib/stringinfo.h"
#include "libpq/pqformat.h"
#include "utils/lsyscache.h"
}

#include <cstring>

#include "pg_envelope/envelope_format.hpp"

using namespace pg_envelope;

namespace {

std::string type_label(FunctionCallInfo fcinfo, int typoid_arg) {
  Oid typoid = PG_NARGS() > typoid_arg ? PG_GETARG_OID(typoid_arg) : InvalidOid;
  if (typoid == InvalidOid) return "pg_envelope ciphertext";
  char* name = pg_call([typoid] { return format_type_be(typoid); });
  std::string out(name);
  pfree(name);
  return out;
}

Datum make_varlena(ByteView bytes) { return PointerGetDatum(pg_varlena(bytes)); }

}  // namespace

// encrypted_*_in(cstring, oid, int4): the canonical text form "env1:<base64>".
PGENV_FUNCTION(envelope_encrypted_in) {
  const char* text = PG_GETARG_CSTRING(0);
  Bytes bytes;
  if (FormatProblem p = decode_text_form(text, bytes))
    throw Error(sqlstate::kInvalidTextRepresentation,
                "invalid input syntax for type " + type_label(fcinfo, 1), p.detail,
                "Values of this type are produced by envelope.encrypt_field().");
  return make_varlena(bytes);
}

PGENV_FUNCTION(envelope_encrypted_out) {
  auto* v = static_cast<struct varlena*>(pg_call([fcinfo] { return PG_DETOAST_DATUM_PACKED(PG_GETARG_DATUM(0)); }));
  ByteView bytes(reinterpret_cast<const std::uint8_t*>(VARDATA_ANY(v)), VARSIZE_ANY_EXHDR(v));
  std::size_t n = text_form_length(bytes.size());
  if (!AllocSizeIsValid(n + 1))
    throw Error(sqlstate::kProgramLimitExceeded, "the text form of this encrypted value is too large",
                "Its base64 text form would exceed 1 GB; values over about 768 MB have no text form.",
                "Read it in binary (COPY ... (FORMAT binary), or a client using the binary protocol). pg_dump "
                "copies in text and cannot dump such a row: store large objects in chunks of a few MB.");
  char* out = static_cast<char*>(pg_alloc(n + 1));
  write_text_form(bytes, out);
  out[n] = '\0';
  PG_RETURN_CSTRING(out);
}

// Binary form: the envelope bytes as they are.
PGENV_FUNCTION(envelope_encrypted_recv) {
  StringInfo buf = reinterpret_cast<StringInfo>(PG_GETARG_POINTER(0));
  ByteView bytes(reinterpret_cast<const std::uint8_t*>(buf->data + buf->cursor),
                 static_cast<std::size_t>(buf->len - buf->cursor));
  EnvelopeView view;
  if (FormatProblem p = parse_envelope(bytes, view))
    throw Error(sqlstate::kInvalidBinaryRepresentation,
                "invalid binary representation for type " + type_label(fcinfo, 1), p.detail,
                "Values of this type are produced by envelope.encrypt_field().");
  buf->cursor = buf->len;
  return make_varlena(bytes);
}

PGENV_FUNCTION(envelope_encrypted_send) {
  auto* v = static_cast<struct varlena*>(pg_call([fcinfo] { return PG_DETOAST_DATUM_PACKED(PG_GETARG_DATUM(0)); }));
  PG_RETURN_BYTEA_P(pg_varlena({reinterpret_cast<const std::uint8_t*>(VARDATA_ANY(v)), VARSIZE_ANY_EXHDR(v)}));
}
