// The version of pg_envelope this library implements: the extension's SQL version
// (pg_envelope.control's default_version) must be the same in every database that
// uses it (see ext::objects() and envelope.version_check).
#pragma once

namespace pg_envelope {

inline constexpr const char* kVersion = "0.2.0";

}  // namespace pg_envelope
