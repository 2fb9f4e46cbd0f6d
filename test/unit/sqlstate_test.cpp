// The named SQLSTATEs of include/pg_envelope/error.hpp: well-formed, each value under
// one name only, and the values of PostgreSQL's errcodes.txt for their names.
#include <gtest/gtest.h>

#include <cctype>
#include <cstring>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "pg_envelope/error.hpp"

namespace pg_envelope {
namespace {

namespace s = sqlstate;

// Every constant, with the value PostgreSQL 15's utils/errcodes.h gives its name.
const std::vector<std::pair<const char*, const char*>> kAll = {
    {s::kConnectionFailure, "08006"},
    {s::kFeatureNotSupported, "0A000"},
    {s::kDataException, "22000"},
    {s::kNullValueNotAllowed, "22004"},
    {s::kCharacterNotInRepertoire, "22021"},
    {s::kInvalidParameterValue, "22023"},
    {s::kInvalidTextRepresentation, "22P02"},
    {s::kInvalidBinaryRepresentation, "22P03"},
    {s::kUntranslatableCharacter, "22P05"},
    {s::kReadOnlySqlTransaction, "25006"},
    {s::kInvalidAuthorizationSpecification, "28000"},
    {s::kDependentObjectsStillExist, "2BP01"},
    {s::kInvalidSchemaName, "3F000"},
    {s::kSyntaxError, "42601"},
    {s::kInsufficientPrivilege, "42501"},
    {s::kWrongObjectType, "42809"},
    {s::kUndefinedFunction, "42883"},
    {s::kUndefinedObject, "42704"},
    {s::kDuplicateSchema, "42P06"},
    {s::kDuplicateObject, "42710"},
    {s::kOutOfMemory, "53200"},
    {s::kProgramLimitExceeded, "54000"},
    {s::kObjectNotInPrerequisiteState, "55000"},
    {s::kObjectInUse, "55006"},
    {s::kQueryCanceled, "57014"},
    {s::kSystemError, "58000"},
    {s::kIoError, "58030"},
    {s::kUndefinedFile, "58P01"},
    {s::kConfigFileError, "F0000"},
    {s::kInternalError, "XX000"},
    {s::kDataCorrupted, "XX001"},
};

TEST(Sqlstate, ValuesMatchPostgresql) {
  for (const auto& [value, expected] : kAll) EXPECT_STREQ(value, expected);
}

TEST(Sqlstate, WellFormedAndUnique) {
  std::set<std::string> seen;
  for (const auto& [value, expected] : kAll) {
    ASSERT_EQ(std::strlen(value), 5u) << value;
    for (int i = 0; i < 5; ++i)
      EXPECT_TRUE(std::isdigit(static_cast<unsigned char>(value[i])) || std::isupper(static_cast<unsigned char>(value[i])))
          << value;
    EXPECT_TRUE(seen.insert(value).second) << value << " has two names";
  }
}

TEST(Sqlstate, ErrorCopiesItsSqlstate) {
  Error e(s::kInsufficientPrivilege, "m");
  EXPECT_STREQ(e.sqlstate(), "42501");
  EXPECT_NE(e.sqlstate(), s::kInsufficientPrivilege);  // a copy, not the pointer
}

}  // namespace
}  // namespace pg_envelope
