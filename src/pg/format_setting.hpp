// envelope.format_version: which envelope format new values are written in (see
// docs/format.md). Every format stays readable whatever the setting.
#pragma once

#include <cstdint>

namespace pg_envelope {

void define_format_guc();
std::uint8_t write_format();  // kFormatV1 or kFormatV2

}  // namespace pg_envelope
