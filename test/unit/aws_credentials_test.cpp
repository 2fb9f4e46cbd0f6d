// AWS credentials (src/kms/aws_credentials.hpp): the shared credentials file parser,
// the order of the sources, and the refusals, all without a network.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <string>

#include "kms/aws_credentials.hpp"
#include "kms/secret_file.hpp"
#include "pg_envelope/error.hpp"
#include "test_support.hpp"

namespace pg_envelope::remote::aws {
namespace {

using test::catch_error;
using test::error_mentions;

TEST(AwsCredentialsFile, ReadsTheProfile) {
  const char* text =
      "# comment\n"
      "[default]\n"
      "aws_access_key_id = AKIDDEFAULT\n"
      "aws_secret_access_key=defaultsecret\n"
      "\n"
      "[ prod ]\r\n"
      "  aws_access_key_id =  AKIDPROD  \r\n"
      "; another comment\n"
      "aws_secret_access_key = prod/secret=with=equals\n"
      "aws_session_token = tok\n"
      "region = eu-west-1\n"
      "not a key value line\n"
      "[other]\n"
      "aws_access_key_id = AKIDOTHER";
  Credentials d = parse_credentials_file(text, "default");
  EXPECT_EQ(d.access_key.view(), "AKIDDEFAULT");
  EXPECT_EQ(d.secret_key.view(), "defaultsecret");
  EXPECT_TRUE(d.session_token.empty());
  Credentials p = parse_credentials_file(text, "prod");
  EXPECT_EQ(p.access_key.view(), "AKIDPROD");
  EXPECT_EQ(p.secret_key.view(), "prod/secret=with=equals");
  EXPECT_EQ(p.session_token.view(), "tok");
  Credentials o = parse_credentials_file(text, "other");  // last line without a newline
  EXPECT_EQ(o.access_key.view(), "AKIDOTHER");
  EXPECT_TRUE(o.secret_key.empty());
  Credentials none = parse_credentials_file(text, "missing");
  EXPECT_TRUE(none.access_key.empty() && none.secret_key.empty() && none.session_token.empty());
}

TEST(AwsCredentialsFile, RepeatedSectionsAddUpAndLaterValuesWin) {
  const char* text = "[p]\naws_access_key_id=A1\n[q]\naws_access_key_id=Q\n[p]\naws_secret_access_key=S\n"
                     "aws_access_key_id=A2\n";
  Credentials c = parse_credentials_file(text, "p");
  EXPECT_EQ(c.access_key.view(), "A2");
  EXPECT_EQ(c.secret_key.view(), "S");
}

TEST(AwsCredentialsFile, OddInputs) {
  for (const char* text : {"", "\n\n", "[", "]", "[]", "=", "[default", "default]\naws_access_key_id=x", "\0"}) {
    SCOPED_TRACE(text);
    Credentials c = parse_credentials_file(text, "default");
    EXPECT_TRUE(c.access_key.empty());
  }
  Credentials empty_name = parse_credentials_file("[]\naws_access_key_id=x\n", "");
  EXPECT_EQ(empty_name.access_key.view(), "x");
  Credentials no_section = parse_credentials_file("aws_access_key_id=x\n", "default");
  EXPECT_TRUE(no_section.access_key.empty());
}

using CredentialsFile = test::TempFile;

std::function<const char*(const char*)> env_of(std::map<std::string, std::string> vars) {
  auto shared = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
  return [shared](const char* n) -> const char* {
    auto it = shared->find(n);
    return it == shared->end() ? nullptr : it->second.c_str();
  };
}

TEST(AwsCredentials, EnvironmentFirst) {
  CredentialsFile f("[default]\naws_access_key_id=FILE\naws_secret_access_key=FILESECRET\n", 0600);
  Credentials c = load_credentials("a", f.path(), "", env_of({{"AWS_ACCESS_KEY_ID", "ENV"},
                                                                {"AWS_SECRET_ACCESS_KEY", "ENVSECRET"},
                                                                {"AWS_SESSION_TOKEN", "ENVTOKEN"}}));
  EXPECT_EQ(c.access_key.view(), "ENV");
  EXPECT_EQ(c.secret_key.view(), "ENVSECRET");
  EXPECT_EQ(c.session_token.view(), "ENVTOKEN");
  // One of the two alone is not enough: the file is used.
  Credentials d = load_credentials("a", f.path(), "", env_of({{"AWS_ACCESS_KEY_ID", "ENV"}}));
  EXPECT_EQ(d.access_key.view(), "FILE");
}

TEST(AwsCredentials, FileAndProfileSources) {
  CredentialsFile f("[default]\naws_access_key_id=D\naws_secret_access_key=DS\n"
                    "[p2]\naws_access_key_id=P\naws_secret_access_key=PS\n", 0600);
  EXPECT_EQ(load_credentials("a", f.path(), "", env_of({})).access_key.view(), "D");
  EXPECT_EQ(load_credentials("a", f.path(), "p2", env_of({})).access_key.view(), "P");
  EXPECT_EQ(load_credentials("a", f.path(), "", env_of({{"AWS_PROFILE", "p2"}})).access_key.view(), "P");
  EXPECT_EQ(load_credentials("a", "", "", env_of({{"AWS_SHARED_CREDENTIALS_FILE", f.path()}})).access_key.view(), "D");
}

TEST(AwsCredentials, Refusals) {
  CredentialsFile world("[default]\naws_access_key_id=D\naws_secret_access_key=worldsecret\n", 0604);
  auto e = catch_error([&] { load_credentials("a", world.path(), "", env_of({})); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "28000");
  EXPECT_TRUE(error_mentions(*e, "world-accessible"));
  EXPECT_FALSE(error_mentions(*e, "worldsecret"));

  e = catch_error([&] { load_credentials("a", "/nonexistent/pg_envelope/credentials", "", env_of({})); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "28000");
  EXPECT_TRUE(error_mentions(*e, "no AWS credentials"));
  EXPECT_TRUE(error_mentions(*e, "/nonexistent/pg_envelope/credentials"));

  CredentialsFile half("[default]\naws_access_key_id=D\n", 0600);
  e = catch_error([&] { load_credentials("a", half.path(), "", env_of({})); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "28000");
  EXPECT_TRUE(error_mentions(*e, "profile \"default\""));

  CredentialsFile huge(std::string(kMaxSecretFileSize + 1, '#'), 0600);
  e = catch_error([&] { load_credentials("a", huge.path(), "", env_of({})); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "28000");
  EXPECT_TRUE(error_mentions(*e, "too large"));

  e = catch_error([&] { load_credentials("a", "", "", env_of({})); });  // no file, no HOME
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "28000");
}

}  // namespace
}  // namespace pg_envelope::remote::aws
