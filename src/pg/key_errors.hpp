// Errors about keys and KMSs that the SQL functions share.
//
// The rule on echoing arguments: no message, detail, hint or context repeats an
// argument that could be plaintext (a value passed in the key-name position by
// mistake, say). A key or KMS name appears in an error only once it is known to
// name an existing key or KMS; a name that names nothing is never shown.
#pragma once

#include <string>
#include <string_view>

#include "pg_envelope/error.hpp"

namespace pg_envelope {

[[noreturn]] inline void throw_no_such_key(const char* hint = nullptr) {
  throw Error(sqlstate::kUndefinedObject, "key does not exist",
              "No key of this database has the name given. The name is not repeated here: a value passed as "
              "the key name by mistake could be plaintext.",
              hint != nullptr ? hint
                              : "envelope.keys lists the keys of this database. Check the order of the arguments: "
                                "encrypt_field(value, key_name, context).");
}

[[noreturn]] inline void throw_no_such_kms() {
  throw Error(sqlstate::kUndefinedObject, "KMS does not exist",
              "No KMS of this database has the name given; the name is not repeated here.",
              "envelope.kms_configs lists the configured KMSs; configure one with envelope.create_kms().");
}

[[noreturn]] inline void throw_key_destroyed(const std::string& name, const char* hint = nullptr) {
  throw Error(sqlstate::kObjectNotInPrerequisiteState, "key \"" + name + "\" has been destroyed",
              "Its data keys were erased by envelope.destroy_key(); values encrypted with it can never be "
              "decrypted again.",
              hint != nullptr ? hint : "");
}

[[noreturn]] inline void throw_key_disabled(const std::string& name,
                                            const char* hint = "Enable it again with envelope.enable_key().") {
  throw Error(sqlstate::kObjectNotInPrerequisiteState, "key \"" + name + "\" is disabled",
              "envelope.disable_key() stopped its use; its values are intact.", hint);
}

// Replaces every occurrence of `needle` in the error's texts (a caller-supplied
// value that names nothing existing, e.g. a KEK being tried for the first time).
// `what` names the thing: `KEK "x"` becomes `the KEK given` when what is "KEK"
// and replacement "the KEK given"; any other occurrence of x becomes
// "(the KEK given)" where it is not part of a longer name or word: a needle that
// begins (ends) with a letter, digit or underscore is replaced only where the text
// has none of those just before (after) it, so that a short name ("v") does not
// mangle every word that contains the letter.
inline Error without(const Error& e, std::string_view what, std::string_view needle, std::string_view replacement) {
  if (needle.empty()) return e;
  std::string quoted = std::string(what) + " \"" + std::string(needle) + "\"";
  std::string bracketed = "(" + std::string(replacement) + ")";
  auto word_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  };
  const bool bound_before = word_char(needle.front()), bound_after = word_char(needle.back());
  auto scrub = [&](std::string s) {
    for (std::size_t at = s.find(quoted); at != std::string::npos; at = s.find(quoted, at + replacement.size()))
      s.replace(at, quoted.size(), replacement);
    for (std::size_t at = s.find(needle); at != std::string::npos;) {
      std::size_t end = at + needle.size();
      bool inside_word = (bound_before && at > 0 && word_char(s[at - 1])) ||
                         (bound_after && end < s.size() && word_char(s[end]));
      if (inside_word) {
        at = s.find(needle, at + 1);
        continue;
      }
      s.replace(at, needle.size(), bracketed);
      at = s.find(needle, at + bracketed.size());
    }
    return s;
  };
  return Error(e.sqlstate(), scrub(e.what()), scrub(e.detail()), scrub(e.hint()));
}

}  // namespace pg_envelope
