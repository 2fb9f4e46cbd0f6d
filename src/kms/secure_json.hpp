// JSON for KMS requests and responses, which carry key material and tokens. Pure C++.
//
// remote::json is nlohmann::basic_json whose every heap block is obtained through
// ZeroingAllocator: strings (their characters and the string objects themselves,
// which hold short strings inline), object nodes (which hold the keys) and arrays.
// So a JSON value wipes everything it held when it is destroyed.
//
// nlohmann's own parser and serializer are not used on secrets: the parser keeps a
// plain std::vector copy of every token it reads (for its error messages) and builds
// std::string error messages quoting the input, and the serializer escapes strings
// through a buffer of its own; none of them is wiped. parse_json_secret() and
// dump_json_secret() do the same work with wiping storage only. nlohmann::json::parse
// stays fine for text that holds no secret (KMS options).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "pg_envelope/secrets.hpp"
#include "pg_envelope/secure_bytes.hpp"

namespace pg_envelope::remote {

using SecureStdString = std::basic_string<char, std::char_traits<char>, ZeroingAllocator<char>>;
using json = nlohmann::basic_json<std::map, std::vector, SecureStdString, bool, std::int64_t, std::uint64_t, double,
                                  ZeroingAllocator>;

// Objects and arrays nested deeper than this are refused (no KMS answer comes near).
inline constexpr int kMaxJsonDepth = 128;

// Parses `text` as one JSON value (RFC 8259), with the same acceptance and the same
// result as json::parse(text, nullptr, false) (strict, no comments; a leading UTF-8
// byte order mark is skipped; strings must be valid UTF-8; numbers become unsigned,
// signed or float as there; a repeated object key keeps its last value; a NUL byte
// after the value ends the input, as in nlohmann's lexer), except that
// nesting deeper than kMaxJsonDepth is refused. Returns a discarded value
// (is_discarded()) when `text` is not JSON. Builds no error message and throws
// nothing but std::bad_alloc; every intermediate buffer is wiped.
json parse_json_secret(std::string_view text);

// The compact serialisation of `value`, byte for byte what value.dump() gives,
// written into a SecretString. Throws Error (XX000) for a string that is not valid
// UTF-8, where dump() would throw nlohmann::json::type_error.
SecretString dump_json_secret(const json& value);

// Appends the code point `cp` to `out` in UTF-8 (the JSON and the STS XML readers
// decode escapes and character references with it); its scratch bytes are zeroed.
void append_utf8(SecretString& out, unsigned long cp);

}  // namespace pg_envelope::remote
