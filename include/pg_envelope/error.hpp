// Errors raised by the pure C++ layers of pg_envelope.
//
// An Error carries a PostgreSQL SQLSTATE (five characters) with message, detail and
// hint, so the boundary guard can raise it with ereport() unchanged. Nothing in an
// Error may contain key material or plaintext: messages name keys, KMSs and
// operations only.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

namespace pg_envelope {

namespace sqlstate {
// The SQLSTATEs the pure layers use; the names follow PostgreSQL's errcodes.txt.
inline constexpr const char* kInvalidTextRepresentation = "22P02";
inline constexpr const char* kInvalidBinaryRepresentation = "22P03";
inline constexpr const char* kInvalidParameterValue = "22023";
inline constexpr const char* kNullValueNotAllowed = "22004";
inline constexpr const char* kProgramLimitExceeded = "54000";
inline constexpr const char* kDataException = "22000";
inline constexpr const char* kCharacterNotInRepertoire = "22021";
inline constexpr const char* kUndefinedObject = "42704";
inline constexpr const char* kDuplicateObject = "42710";
inline constexpr const char* kObjectNotInPrerequisiteState = "55000";
inline constexpr const char* kConfigFileError = "F0000";
inline constexpr const char* kUndefinedFile = "58P01";
inline constexpr const char* kIoError = "58030";
inline constexpr const char* kOutOfMemory = "53200";
inline constexpr const char* kInternalError = "XX000";
}  // namespace sqlstate

class Error : public std::runtime_error {
 public:
  Error(const char* sqlstate, std::string message, std::string detail = {}, std::string hint = {})
      : std::runtime_error(std::move(message)), detail_(std::move(detail)), hint_(std::move(hint)) {
    // Copied: a SQLSTATE may come from a buffer that does not outlive the throw.
    std::size_t i = 0;
    for (; sqlstate != nullptr && i < 5 && sqlstate[i] != '\0'; ++i) sqlstate_[i] = sqlstate[i];
    sqlstate_[i] = '\0';
  }

  const char* sqlstate() const noexcept { return sqlstate_; }
  const std::string& detail() const noexcept { return detail_; }
  const std::string& hint() const noexcept { return hint_; }

 private:
  char sqlstate_[6];
  std::string detail_;
  std::string hint_;
};

}  // namespace pg_envelope
