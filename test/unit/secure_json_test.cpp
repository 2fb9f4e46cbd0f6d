// parse_json_secret / dump_json_secret (src/kms/secure_json.hpp): the JSON reader and
// writer for KMS bodies, which must accept, build and write exactly what nlohmann's
// parse() and dump() do (the providers used those before), with wiping storage only.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kms/secure_json.hpp"
#include "pg_envelope/error.hpp"

namespace pg_envelope::remote {
namespace {

// Same acceptance and same value as nlohmann (compared through nlohmann's dump).
void expect_like_nlohmann(const std::string& text) {
  SCOPED_TRACE(testing::PrintToString(text));
  json ours = parse_json_secret(text);
  json theirs = json::parse(text, nullptr, false);
  ASSERT_EQ(ours.is_discarded(), theirs.is_discarded());
  if (theirs.is_discarded()) return;
  EXPECT_EQ(ours.type(), theirs.type());
  EXPECT_EQ(ours.dump(), theirs.dump());
  EXPECT_EQ(ours, theirs);
  EXPECT_EQ(dump_json_secret(ours).view(), std::string_view(theirs.dump()));
}

TEST(SecureJson, AcceptsWhatNlohmannAccepts) {
  const std::vector<std::string> valid = {
      "{}", "[]", "null", "true", "false", "0", "-0", "1", "-1", "1.5", "-1.5e3", "1E+2", "1e-2", "0.0",
      "18446744073709551615", "18446744073709551616", "-9223372036854775808", "-9223372036854775809",
      "1e-400", "123456789012345678901234567890", "\"\"", "\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"", "\"\\u0000\"",
      "\"\\u00e9\\u20AC\\ud83d\\ude00\"", "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"", "\"\x7f\"",
      " \t\r\n{ \"a\" : [ 1 , 2 , { \"b\" : null } ] } \n", "{\"a\":1,\"a\":2}", "{\"b\":1,\"a\":2}",
      "[[[[[[[[[[]]]]]]]]]]", "\xEF\xBB\xBF{}", "{\"k\":\"v\"}   ",
      // nlohmann's lexer takes a NUL byte for the end of the input, so text after the
      // value and a NUL is ignored.
      std::string("{}\0trailing", 11), std::string("[1] \0 x", 8),
      R"({"request_id":"7c3a","lease_id":"","renewable":false,"lease_duration":0,"data":{"plaintext":"AAAA","key_version":1},"wrap_info":null,"warnings":null,"auth":null})",
      R"({"errors":["1 error occurred:\n\t* permission denied\n\n"]})",
      R"({"__type":"com.amazon.coral.service#AccessDeniedException","message":"no"})",
      R"({"error":{"code":403,"message":"Permission 'x' denied","status":"PERMISSION_DENIED"}})",
      R"({"access_token":"ya29.abc","expires_in":3599,"token_type":"Bearer"})",
      R"({"expires_in":1.5e2,"x":-0.0})"};
  for (const auto& t : valid) {
    expect_like_nlohmann(t);
    EXPECT_FALSE(parse_json_secret(t).is_discarded()) << t;
  }
}

TEST(SecureJson, RefusesWhatNlohmannRefuses) {
  const std::vector<std::string> invalid = {
      "", " ", "{", "}", "[", "[1,]", "[,1]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "{'a':1}", "01", "-", "-01",
      "1.", ".5", "1e", "1e+", "+1", "NaN", "Infinity", "1e400", "-1e400", "tru", "nul", "truex", "\"abc",
      "\"a\nb\"", "\"\\x\"", "\"\\u12\"", "\"\\u123g\"", "\"\\ud800\"", "\"\\ud800x\"", "\"\\ud800\\u0041\"",
      "\"\\udc00\"", "\"\xc0\xaf\"", "\"\xe0\x80\xaf\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"", "\"\xff\"",
      "\"\xc3\"", "[1 2]", "{} {}", "\xEF\xBB{}", "\xEF{}", "/* c */ {}", "{}//", std::string("\0{}", 3),
      std::string("[\0]", 3), "[1,\0", std::string("\"a\0\"", 4), std::string("{\"a\":1\0}", 8)};
  for (const auto& t : invalid) {
    expect_like_nlohmann(t);
    EXPECT_TRUE(parse_json_secret(t).is_discarded()) << testing::PrintToString(t);
  }
}

TEST(SecureJson, NumbersKeepNlohmannsTypes) {
  EXPECT_TRUE(parse_json_secret("5").is_number_unsigned());
  EXPECT_TRUE(parse_json_secret("-5").is_number_integer());
  EXPECT_FALSE(parse_json_secret("-5").is_number_unsigned());
  EXPECT_TRUE(parse_json_secret("5.0").is_number_float());
  EXPECT_TRUE(parse_json_secret("18446744073709551616").is_number_float());
  EXPECT_EQ(parse_json_secret("4294967295").get<std::uint64_t>(), 4294967295u);
}

TEST(SecureJson, NestingIsLimited) {
  std::string ok(kMaxJsonDepth, '['), deep(kMaxJsonDepth + 1, '[');
  ok += std::string(kMaxJsonDepth, ']');
  deep += std::string(kMaxJsonDepth + 1, ']');
  EXPECT_FALSE(parse_json_secret(ok).is_discarded());
  EXPECT_TRUE(parse_json_secret(deep).is_discarded());
  std::string very_deep(100000, '[');  // no stack overflow
  EXPECT_TRUE(parse_json_secret(very_deep).is_discarded());
}

TEST(SecureJson, LastDuplicateKeyWins) {
  json j = parse_json_secret(R"({"a":1,"b":2,"a":{"c":3}})");
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.size(), 2u);
  EXPECT_EQ(j["a"]["c"], 3);
}

TEST(SecureJson, DumpsLikeNlohmann) {
  json j;
  j["plaintext"] = "c2VjcmV0";
  j["KeyId"] = "alias/pg-envelope";
  j["EncryptionContext"] = {{"pg_envelope:key", "k"}, {"pg_envelope:version", "1"}};
  j["ctl"] = std::string("\x01\x1f\"\\/\b\f\n\r\t\x7f\xc3\xa9", 13);
  j["list"] = {1, -2, 3.25, true, nullptr, "x"};
  j["u"] = std::uint64_t{18446744073709551615u};
  j["empty"] = json::object();
  j["empty_list"] = json::array();
  EXPECT_EQ(dump_json_secret(j).view(), std::string_view(j.dump()));
  EXPECT_EQ(dump_json_secret(json()).view(), "null");
}

TEST(SecureJson, DumpRefusesInvalidUtf8LikeNlohmann) {
  json j;
  j["v"] = std::string("\xff");
  EXPECT_THROW(j.dump(), json::type_error);
  try {
    dump_json_secret(j);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.sqlstate(), "XX000");
  }
}

}  // namespace
}  // namespace pg_envelope::remote
