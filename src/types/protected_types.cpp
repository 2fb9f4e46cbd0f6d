// Input/output of the protected column types (envelope.protected_text, _bytea, _jsonb)
// and of their blind-index views (envelope.blind_text, _bytea, _jsonb).
//
// Input: "penv1:..." is a sealed value (kept as it is: pg_dump, COPY and logical
// replication never encrypt twice); anything else is plaintext, stored unsealed until
// the column's trigger seals it. Output: a sealed value shows its plaintext to a role
// holding decrypt on its key (superusers only when granted explicitly), and its
// "penv1:" text form to everyone else, so a dump or a replica carries ciphertext and
// never fails. Errors never quote a value.
#include "pg/guard.hpp"

extern "C" {
#include "lib/stringinfo.h"
#include "libpq/pqformat.h"
#include "mb/pg_wchar.h"
#include "utils/jsonb.h"
}

#include <cstring>

#include "pg/protection.hpp"
#include "pg/secret_memory.hpp"
#include "pg_envelope/protected_format.hpp"

using namespace pg_envelope;

namespace {

const char* type_name(PlainType t) {
  switch (t) {
    case PlainType::kText:
      return "envelope.protected_text";
    case PlainType::kBytea:
      return "envelope.protected_bytea";
    case PlainType::kJsonb:
      return "envelope.protected_jsonb";
  }
  return "protected value";
}

Datum varlena_datum(ByteView prefix, ByteView body) {
  std::size_t n = prefix.size() + body.size();
  auto* v = static_cast<struct varlena*>(pg_alloc(VARHDRSZ + n));
  SET_VARSIZE(v, VARHDRSZ + n);
  if (!prefix.empty()) std::memcpy(VARDATA(v), prefix.data(), prefix.size());
  if (!body.empty()) std::memcpy(VARDATA(v) + prefix.size(), body.data(), body.size());
  return PointerGetDatum(v);
}

ByteView bytes_of(struct varlena* v) {
  return {reinterpret_cast<const std::uint8_t*>(VARDATA_ANY(v)), VARSIZE_ANY_EXHDR(v)};
}

[[noreturn]] void bad_plaintext(PlainType type, const char* what) {
  throw Error(sqlstate::kInvalidTextRepresentation, std::string("invalid input syntax for type ") + type_name(type),
              std::string("The plaintext is not valid ") + what + "; the value is not repeated here.", "");
}

// The canonical plaintext of a bytea or jsonb input, as the unsealed representation:
// 0x01 followed by the bytes (jsonb: its canonical text). The parsers' own errors
// quote their input, so they are replaced.
Datum unsealed_from_input(PlainType type, const char* str) {
  static const std::uint8_t kMarker = kUnsealedMarker;
  if (type == PlainType::kBytea) {
    Datum b;
    try {
      b = pg_call([str] { return DirectFunctionCall1(byteain, CStringGetDatum(str)); });
    } catch (const PgError& e) {
      FreeErrorData(e.data());
      bad_plaintext(type, "bytea input");
    }
    return varlena_datum({&kMarker, 1}, bytes_of(reinterpret_cast<struct varlena*>(DatumGetPointer(b))));
  }
  Datum j;
  try {
    j = pg_call([str] { return DirectFunctionCall1(jsonb_in, CStringGetDatum(str)); });
  } catch (const PgError& e) {
    FreeErrorData(e.data());
    bad_plaintext(type, "JSON");
  }
  char* canonical = DatumGetCString(pg_call([j] { return DirectFunctionCall1(jsonb_out, j); }));
  Datum out = varlena_datum({&kMarker, 1}, as_bytes(canonical));
  secure_zero(canonical, std::strlen(canonical));
  return out;
}

Datum protected_in(FunctionCallInfo fcinfo, PlainType type) {
  const char* str = PG_GETARG_CSTRING(0);
  Bytes sealed;
  bool matched = false;
  if (FormatProblem p = decode_protected_text_form(str, type, sealed, matched))
    throw Error(sqlstate::kInvalidTextRepresentation, std::string("invalid input syntax for type ") + type_name(type),
                p.detail, "A value that begins with \"penv1:\" must be a sealed value, as a protected column shows it.");
  if (matched) return varlena_datum({}, sealed);
  if (type == PlainType::kText) return varlena_datum({}, as_bytes(str));
  return unsealed_from_input(type, str);
}

// The output text of a plaintext of `type` (palloc'd C string).
char* plaintext_out(PlainType type, ByteView plain) {
  if (type == PlainType::kBytea) {
    struct varlena* b = pg_varlena(plain);
    return DatumGetCString(pg_call([b] { return DirectFunctionCall1(byteaout, PointerGetDatum(b)); }));
  }
  auto* out = static_cast<char*>(pg_alloc(plain.size() + 1));
  if (!plain.empty()) std::memcpy(out, plain.data(), plain.size());
  out[plain.size()] = '\0';
  return out;
}

char* text_form(ByteView sealed) {
  std::size_t n = protected_text_form_length(sealed.size());
  auto* out = static_cast<char*>(pg_alloc(n + 1));
  write_protected_text_form(sealed, out);
  out[n] = '\0';
  return out;
}

Datum protected_out(FunctionCallInfo fcinfo, PlainType type) {
  auto* v = static_cast<struct varlena*>(pg_call([fcinfo] { return PG_DETOAST_DATUM_PACKED(PG_GETARG_DATUM(0)); }));
  ByteView bytes = bytes_of(v);
  if (!is_sealed(bytes)) {
    ByteView plain;
    if (!unsealed_plaintext(bytes, type, plain)) PG_RETURN_CSTRING(text_form(bytes));
    PG_RETURN_CSTRING(plaintext_out(type, plain));
  }
  SealedView view;
  if (parse_sealed(bytes, type, view)) PG_RETURN_CSTRING(text_form(bytes));
  protection::Opened o = protection::open_if_allowed(view);
  if (o.data == nullptr) PG_RETURN_CSTRING(text_form(bytes));
  char* out;
  try {
    out = plaintext_out(type, {o.data, o.size});
  } catch (...) {
    protection::release(o);
    throw;
  }
  protection::release(o);
  PG_RETURN_CSTRING(out);
}

Datum protected_recv(FunctionCallInfo fcinfo, PlainType type) {
  StringInfo buf = reinterpret_cast<StringInfo>(PG_GETARG_POINTER(0));
  std::string_view in(buf->data + buf->cursor, static_cast<std::size_t>(buf->len - buf->cursor));
  buf->cursor = buf->len;
  Bytes sealed;
  bool matched = false;
  if (FormatProblem p = decode_protected_text_form(in, type, sealed, matched))
    throw Error(sqlstate::kInvalidBinaryRepresentation,
                std::string("invalid binary representation for type ") + type_name(type), p.detail, "");
  if (matched) return varlena_datum({}, sealed);
  static const std::uint8_t kMarker = kUnsealedMarker;
  switch (type) {
    case PlainType::kText:
      if (std::memchr(in.data(), 0, in.size()) != nullptr ||
          !pg_verifymbstr(in.data(), static_cast<int>(in.size()), /*noError=*/true))
        throw Error(sqlstate::kCharacterNotInRepertoire, "invalid byte sequence for the database encoding",
                    "The plaintext sent in binary is not valid in the database encoding; it is not repeated here.");
      return varlena_datum({}, as_bytes(in));
    case PlainType::kBytea:
      return varlena_datum({&kMarker, 1}, as_bytes(in));
    case PlainType::kJsonb: {
      // jsonb's binary format: version 1, then the JSON text.
      if (in.empty() || in[0] != 1) bad_plaintext(type, "jsonb binary input (version 1 and JSON text)");
      std::string text(in.substr(1));
      Datum out = unsealed_from_input(type, text.c_str());
      secure_zero(text.data(), text.size());
      return out;
    }
  }
  bad_plaintext(type, "input");
}

Datum protected_send(FunctionCallInfo fcinfo, PlainType type) {
  auto* v = static_cast<struct varlena*>(pg_call([fcinfo] { return PG_DETOAST_DATUM_PACKED(PG_GETARG_DATUM(0)); }));
  ByteView bytes = bytes_of(v);
  static const std::uint8_t kJsonbVersion = 1;
  auto plain_send = [type](ByteView plain) {
    return type == PlainType::kJsonb ? varlena_datum({&kJsonbVersion, 1}, plain) : varlena_datum({}, plain);
  };
  auto form_send = [](ByteView sealed) {
    char* f = text_form(sealed);
    Datum d = varlena_datum({}, as_bytes(f));
    pfree(f);
    return d;
  };
  if (!is_sealed(bytes)) {
    ByteView plain;
    if (!unsealed_plaintext(bytes, type, plain)) return form_send(bytes);
    return plain_send(plain);
  }
  SealedView view;
  if (parse_sealed(bytes, type, view)) return form_send(bytes);
  protection::Opened o = protection::open_if_allowed(view);
  if (o.data == nullptr) return form_send(bytes);
  Datum d;
  try {
    d = plain_send({o.data, o.size});
  } catch (...) {
    protection::release(o);
    throw;
  }
  protection::release(o);
  return d;
}

// What blind_out prints cannot be read back as the value it stood for: such input is
// refused rather than compared as the plaintext "(unsealed)" (a query deparsed into
// text, as Citus and postgres_fdw do, would otherwise silently match nothing).
Datum blind_in(FunctionCallInfo fcinfo) {
  std::string_view str = PG_GETARG_CSTRING(0);
  bool printed = str == "(unsealed)";
  if (str.rfind("blind:", 0) == 0) {
    std::string_view rest = str.substr(6);
    printed = rest == "none" || (!rest.empty() && rest.find_first_not_of("0123456789abcdef") == std::string_view::npos);
  }
  if (printed)
    throw Error(sqlstate::kInvalidTextRepresentation, "invalid input syntax for type blind_text",
                "\"(unsealed)\" and \"blind:...\" are how a blind_text value is shown without its plaintext; they "
                "cannot be read back as that value.",
                "A query sent on as text (Citus, postgres_fdw) cannot carry a search value of a protected column: "
                "compare with a subquery, e.g. col = (SELECT 'value'), or with envelope.unseal(col).");
  return protected_in(fcinfo, PlainType::kText);
}

// Blind-index views: what an index on a protected column holds, shown without the
// plaintext ("blind:" and the hex of the blind index), so that a unique violation's
// DETAIL and the server log never carry plaintext.
Datum blind_out(FunctionCallInfo fcinfo, PlainType type) {
  auto* v = static_cast<struct varlena*>(pg_call([fcinfo] { return PG_DETOAST_DATUM_PACKED(PG_GETARG_DATUM(0)); }));
  ByteView bytes = bytes_of(v);
  SealedView view;
  std::string out = "(unsealed)";
  if (is_sealed(bytes) && !parse_sealed(bytes, type, view)) {
    static const char kHex[] = "0123456789abcdef";
    out = "blind:";
    for (std::uint8_t b : view.blind) {
      out.push_back(kHex[b >> 4]);
      out.push_back(kHex[b & 15]);
    }
    if (view.blind.empty()) out += "none";
  }
  auto* c = static_cast<char*>(pg_alloc(out.size() + 1));
  std::memcpy(c, out.c_str(), out.size() + 1);
  PG_RETURN_CSTRING(c);
}

}  // namespace

PGENV_FUNCTION(envelope_protected_text_in) { return protected_in(fcinfo, PlainType::kText); }
PGENV_FUNCTION(envelope_protected_bytea_in) { return protected_in(fcinfo, PlainType::kBytea); }
PGENV_FUNCTION(envelope_protected_jsonb_in) { return protected_in(fcinfo, PlainType::kJsonb); }
PGENV_FUNCTION(envelope_protected_text_out) { return protected_out(fcinfo, PlainType::kText); }
PGENV_FUNCTION(envelope_protected_bytea_out) { return protected_out(fcinfo, PlainType::kBytea); }
PGENV_FUNCTION(envelope_protected_jsonb_out) { return protected_out(fcinfo, PlainType::kJsonb); }
PGENV_FUNCTION(envelope_protected_text_recv) { return protected_recv(fcinfo, PlainType::kText); }
PGENV_FUNCTION(envelope_protected_bytea_recv) { return protected_recv(fcinfo, PlainType::kBytea); }
PGENV_FUNCTION(envelope_protected_jsonb_recv) { return protected_recv(fcinfo, PlainType::kJsonb); }
PGENV_FUNCTION(envelope_protected_text_send) { return protected_send(fcinfo, PlainType::kText); }
PGENV_FUNCTION(envelope_protected_bytea_send) { return protected_send(fcinfo, PlainType::kBytea); }
PGENV_FUNCTION(envelope_protected_jsonb_send) { return protected_send(fcinfo, PlainType::kJsonb); }
PGENV_FUNCTION(envelope_blind_text_out) { return blind_out(fcinfo, PlainType::kText); }
PGENV_FUNCTION(envelope_blind_text_in) { return blind_in(fcinfo); }
PGENV_FUNCTION(envelope_blind_bytea_out) { return blind_out(fcinfo, PlainType::kBytea); }
PGENV_FUNCTION(envelope_blind_jsonb_out) { return blind_out(fcinfo, PlainType::kJsonb); }
