// Rows of the key tables as the C++ layers see them.
#pragma once

#include <cstdint>
#include <string>

#include "pg_envelope/envelope_format.hpp"
#include "pg_envelope/secure_bytes.hpp"

namespace pg_envelope {

struct KeyRecord {
  std::uint32_t key_id = 0;
  std::string name;
  std::string kms;
  std::string kek;
  bool destroyed = false;
  bool disabled = false;  // envelope.disable_key(): refused until enable_key()
  std::uint32_t current_version = 0;
};

struct DekRecord {
  KeyRecord key;
  std::uint32_t version = 0;
  bool destroyed = false;
  Bytes wrapped;  // empty once destroyed
  std::int64_t wrapped_at_us = 0;  // when `wrapped` was made (created or last re-wrapped)
};

}  // namespace pg_envelope
