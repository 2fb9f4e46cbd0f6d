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
// SQLSTATEs raised by pg_envelope, named as in PostgreSQL's errcodes.txt (the
// ERRCODE_ name without its prefix, in camel case). Every layer uses these names,
// never a literal, and no value has two names here (test/unit/sqlstate_test.cpp).
// Class 08: connection exception
inline constexpr const char* kConnectionFailure = "08006";
// Class 0A: feature not supported
inline constexpr const char* kFeatureNotSupported = "0A000";
// Class 22: data exception
inline constexpr const char* kDataException = "22000";
inline constexpr const char* kNullValueNotAllowed = "22004";
inline constexpr const char* kCharacterNotInRepertoire = "22021";
inline constexpr const char* kInvalidParameterValue = "22023";
inline constexpr const char* kInvalidTextRepresentation = "22P02";
inline constexpr const char* kInvalidBinaryRepresentation = "22P03";
inline constexpr const char* kUntranslatableCharacter = "22P05";
// Class 23: integrity constraint violation
inline constexpr const char* kNotNullViolation = "23502";
inline constexpr const char* kStringDataRightTruncation = "22001";
// Class 25: invalid transaction state
inline constexpr const char* kReadOnlySqlTransaction = "25006";
// Class 28: invalid authorization specification
inline constexpr const char* kInvalidAuthorizationSpecification = "28000";
// Class 2B: dependent privilege descriptors still exist
inline constexpr const char* kDependentObjectsStillExist = "2BP01";
// Class 3F: invalid schema name
inline constexpr const char* kInvalidSchemaName = "3F000";
// Class 42: syntax error or access rule violation
inline constexpr const char* kSyntaxError = "42601";
inline constexpr const char* kInsufficientPrivilege = "42501";
inline constexpr const char* kWrongObjectType = "42809";
inline constexpr const char* kUndefinedFunction = "42883";
inline constexpr const char* kUndefinedColumn = "42703";
inline constexpr const char* kUndefinedObject = "42704";
inline constexpr const char* kUndefinedTable = "42P01";
inline constexpr const char* kDuplicateSchema = "42P06";
inline constexpr const char* kDuplicateObject = "42710";
// Class 53: insufficient resources
inline constexpr const char* kOutOfMemory = "53200";
inline constexpr const char* kConfigurationLimitExceeded = "53400";
// Class 54: program limit exceeded
inline constexpr const char* kProgramLimitExceeded = "54000";
// Class 55: object not in prerequisite state
inline constexpr const char* kObjectNotInPrerequisiteState = "55000";
inline constexpr const char* kObjectInUse = "55006";
// Class 57: operator intervention
inline constexpr const char* kQueryCanceled = "57014";
// Class 58: system error (errors external to PostgreSQL itself)
inline constexpr const char* kSystemError = "58000";
inline constexpr const char* kIoError = "58030";
inline constexpr const char* kUndefinedFile = "58P01";
// Class F0: configuration file error
inline constexpr const char* kConfigFileError = "F0000";
// Class XX: internal error
inline constexpr const char* kInternalError = "XX000";
inline constexpr const char* kDataCorrupted = "XX001";
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
