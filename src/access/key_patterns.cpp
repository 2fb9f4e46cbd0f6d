// Key-name patterns (see key_patterns.hpp).
#include "pg_envelope/key_patterns.hpp"

namespace pg_envelope {

namespace {

bool name_char(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
         c == '.' || c == ':' || c == '@' || c == '/';
}

bool first_char(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

bool is_prefix_pattern(std::string_view p) noexcept { return !p.empty() && p.back() == '*'; }

}  // namespace

bool valid_key_pattern(std::string_view pattern) noexcept {
  if (pattern == "*") return true;
  std::string_view name = is_prefix_pattern(pattern) ? pattern.substr(0, pattern.size() - 1) : pattern;
  if (name.empty() || name.size() > 63 || !first_char(name[0])) return false;
  for (char c : name)
    if (!name_char(c)) return false;
  return true;
}

bool key_pattern_matches(std::string_view pattern, std::string_view key_name) noexcept {
  if (!is_prefix_pattern(pattern)) return pattern == key_name;
  std::string_view prefix = pattern.substr(0, pattern.size() - 1);
  return key_name.substr(0, prefix.size()) == prefix;
}

bool key_pattern_covers(std::string_view outer, std::string_view inner) noexcept {
  if (!is_prefix_pattern(outer)) return outer == inner;
  // outer = "p*": covers every name and prefix pattern that starts with p.
  std::string_view prefix = outer.substr(0, outer.size() - 1);
  return inner.substr(0, prefix.size()) == prefix;
}

}  // namespace pg_envelope
