// Key-name patterns of per-key privileges (envelope.grant_key): a key name, a prefix
// followed by '*' ("tenant_*"), or "*" for every key. Pure C++.
#pragma once

#include <string_view>

namespace pg_envelope {

// A key name (1 to 63 characters from A-Z a-z 0-9 _-.:@/, not starting with -.:@/),
// optionally followed by '*'; or "*" alone.
bool valid_key_pattern(std::string_view pattern) noexcept;

// Whether `pattern` matches the key name.
bool key_pattern_matches(std::string_view pattern, std::string_view key_name) noexcept;

// Whether every name `inner` matches is matched by `outer` (for `inner` a pattern or a
// key name): who administers `outer` may grant on `inner`.
bool key_pattern_covers(std::string_view outer, std::string_view inner) noexcept;

}  // namespace pg_envelope
