// envelope.format_version (see format_setting.hpp).
#include "guard.hpp"

extern "C" {
#include "utils/guc.h"
}

#include "format_setting.hpp"
#include "pg_envelope/envelope_format.hpp"

namespace pg_envelope {

namespace {
int format_version = kFormatV2;
}

void define_format_guc() {
  DefineCustomIntVariable("envelope.format_version", "Envelope format new encrypted values are written in.",
                          "2: compact (34 bytes of overhead for DEK versions below 128); 1: the 38-byte format "
                          "of pg_envelope 0.1.0, for servers that still run that library. Both are always read.",
                          &format_version, kFormatV2, kFormatV1, kFormatV2, PGC_USERSET, 0, nullptr, nullptr,
                          nullptr);
}

std::uint8_t write_format() { return static_cast<std::uint8_t>(format_version); }

}  // namespace pg_envelope
