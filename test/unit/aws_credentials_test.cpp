// AWS credentials (src/kms/aws_credentials.hpp, aws_credential_chain.hpp, aws_sts.hpp):
// the shared credentials file parser, the order of the chain, caching and expiry, the
// STS XML and container/IMDS JSON parsers, option checks, and the refusals, all without
// a network (the sources that need one are covered by test/integration/test_aws_credentials.py).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <string>

#include "kms/aws_credential_chain.hpp"
#include "kms/aws_credentials.hpp"
#include "kms/aws_sts.hpp"
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

// The chain as the provider builds it, with the instance-metadata service switched off
// so that nothing leaves the machine.
Credentials load_credentials(const std::string& kms, const std::string& file, const std::string& profile,
                             std::map<std::string, std::string> env) {
  env.emplace("AWS_EC2_METADATA_DISABLED", "true");
  ChainConfig cfg;
  cfg.kms = kms;
  cfg.region = "us-east-1";
  cfg.credentials_file = file;
  cfg.profile = profile;
  cfg.sts_endpoint = "https://sts.us-east-1.amazonaws.com";
  CredentialProvider p(cfg);
  KmsContext ctx;
  ctx.getenv = env_of(std::move(env));
  return p.get(ctx);
}

TEST(AwsCredentials, EnvironmentFirst) {
  CredentialsFile f("[default]\naws_access_key_id=FILE\naws_secret_access_key=FILESECRET\n", 0600);
  Credentials c = load_credentials("a", f.path(), "", {{"AWS_ACCESS_KEY_ID", "ENV"},
                                                       {"AWS_SECRET_ACCESS_KEY", "ENVSECRET"},
                                                       {"AWS_SESSION_TOKEN", "ENVTOKEN"}});
  EXPECT_EQ(c.access_key.view(), "ENV");
  EXPECT_EQ(c.secret_key.view(), "ENVSECRET");
  EXPECT_EQ(c.session_token.view(), "ENVTOKEN");
  EXPECT_EQ(c.expires_at_us, 0);
  // One of the two alone is not enough: the file is used.
  Credentials d = load_credentials("a", f.path(), "", {{"AWS_ACCESS_KEY_ID", "ENV"}});
  EXPECT_EQ(d.access_key.view(), "FILE");
  EXPECT_NE(d.source.find(f.path()), std::string::npos);
}

TEST(AwsCredentials, FileAndProfileSources) {
  CredentialsFile f("[default]\naws_access_key_id=D\naws_secret_access_key=DS\n"
                    "[p2]\naws_access_key_id=P\naws_secret_access_key=PS\n", 0600);
  EXPECT_EQ(load_credentials("a", f.path(), "", {}).access_key.view(), "D");
  EXPECT_EQ(load_credentials("a", f.path(), "p2", {}).access_key.view(), "P");
  EXPECT_EQ(load_credentials("a", f.path(), "", {{"AWS_PROFILE", "p2"}}).access_key.view(), "P");
  EXPECT_EQ(load_credentials("a", "", "", {{"AWS_SHARED_CREDENTIALS_FILE", f.path()}}).access_key.view(), "D");
}

TEST(AwsCredentials, Refusals) {
  CredentialsFile world("[default]\naws_access_key_id=D\naws_secret_access_key=worldsecret\n", 0604);
  auto e = catch_error([&] { load_credentials("a", world.path(), "", {}); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "28000");
  EXPECT_TRUE(error_mentions(*e, "world-accessible"));
  EXPECT_FALSE(error_mentions(*e, "worldsecret"));

  // A file named by the option that cannot be read is an error, not the next source.
  e = catch_error([&] { load_credentials("a", "/nonexistent/pg_envelope/credentials", "", {}); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "28000");
  EXPECT_TRUE(error_mentions(*e, "no AWS credentials"));
  EXPECT_TRUE(error_mentions(*e, "/nonexistent/pg_envelope/credentials"));

  CredentialsFile half("[default]\naws_access_key_id=D\n", 0600);
  e = catch_error([&] { load_credentials("a", half.path(), "", {}); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "28000");
  EXPECT_TRUE(error_mentions(*e, "profile \"default\""));

  CredentialsFile huge(std::string(kMaxSecretFileSize + 1, '#'), 0600);
  e = catch_error([&] { load_credentials("a", huge.path(), "", {}); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "28000");
  EXPECT_TRUE(error_mentions(*e, "too large"));

  // No source at all (no file, no HOME, IMDS off): the detail walks the whole chain.
  e = catch_error([&] { load_credentials("a", "", "", {}); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "28000");
  EXPECT_TRUE(error_mentions(*e, "no AWS credentials"));
  for (const char* part : {"AWS_ACCESS_KEY_ID", "AWS_WEB_IDENTITY_TOKEN_FILE", "shared credentials file",
                           "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_EC2_METADATA_DISABLED"})
    EXPECT_TRUE(error_mentions(*e, part)) << part;

  // A default file that does not exist is skipped silently (HOME without .aws).
  e = catch_error([&] { load_credentials("a", "", "", {{"HOME", "/nonexistent/pg_envelope/home"}}); });
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(error_mentions(*e, "no AWS credentials"));

  // Container URIs the SDKs refuse are refused, before any request.
  e = catch_error([&] {
    load_credentials("a", "", "", {{"AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://10.0.0.1/creds"}});
  });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "28000");
  EXPECT_TRUE(error_mentions(*e, "AWS_CONTAINER_CREDENTIALS_FULL_URI not allowed"));
  e = catch_error([&] { load_credentials("a", "", "", {{"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "creds"}}); });
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(error_mentions(*e, "RELATIVE_URI"));
  // A web identity token file that is missing is an error of that source.
  e = catch_error([&] {
    load_credentials("a", "", "", {{"AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/pg_envelope/token"},
                                   {"AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/r"}});
  });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "28000");
  EXPECT_TRUE(error_mentions(*e, "web identity token file cannot be read"));
}

// ------------------------------------------------------------------ chain order, caching

class FakeSource final : public CredentialSource {
 public:
  FakeSource(const char* name, std::string key, std::int64_t expires, int* calls)
      : name_(name), key_(std::move(key)), expires_(expires), calls_(calls) {}
  const char* name() const noexcept override { return name_; }
  std::optional<Credentials> fetch(const KmsContext&, std::string& skipped) override {
    ++*calls_;
    if (key_.empty()) {
      skipped = std::string(name_) + " not configured";
      return std::nullopt;
    }
    if (key_ == "throw") throw Error("28000", std::string(name_) + " failed");
    Credentials c;
    c.access_key = SecretString(key_ + std::to_string(*calls_));
    c.secret_key = SecretString("s");
    c.expires_at_us = expires_;
    c.source = name_;
    return c;
  }

 private:
  const char* name_;
  std::string key_;
  std::int64_t expires_;
  int* calls_;
};

constexpr std::int64_t kSecond = 1000000;

TEST(AwsCredentialChain, FirstConfiguredSourceWinsAndErrorsStop) {
  int c1 = 0, c2 = 0, c3 = 0;
  std::vector<std::unique_ptr<CredentialSource>> s;
  s.push_back(std::make_unique<FakeSource>("one", "", 0, &c1));
  s.push_back(std::make_unique<FakeSource>("two", "TWO", 0, &c2));
  s.push_back(std::make_unique<FakeSource>("three", "THREE", 0, &c3));
  std::int64_t now = 1000 * kSecond;
  CredentialProvider p(ChainConfig{}, std::move(s), [&] { return now; });
  KmsContext ctx;
  EXPECT_EQ(p.get(ctx).access_key.view(), "TWO1");
  // Static credentials are not cached: read again on every call.
  EXPECT_EQ(p.get(ctx).access_key.view(), "TWO2");
  EXPECT_EQ(c3, 0);
  EXPECT_FALSE(p.invalidate());  // nothing cached: a retry would not help

  int d1 = 0, d2 = 0;
  std::vector<std::unique_ptr<CredentialSource>> t;
  t.push_back(std::make_unique<FakeSource>("broken", "throw", 0, &d1));
  t.push_back(std::make_unique<FakeSource>("next", "NEXT", 0, &d2));
  CredentialProvider q(ChainConfig{}, std::move(t), [&] { return now; });
  auto e = catch_error([&] { q.get(ctx); });
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(error_mentions(*e, "broken failed"));
  EXPECT_EQ(d2, 0);  // a configured source that fails never falls through
}

TEST(AwsCredentialChain, TemporaryCredentialsAreCachedUntilShortlyBeforeExpiry) {
  int calls = 0;
  std::int64_t now = 1000 * kSecond;
  std::vector<std::unique_ptr<CredentialSource>> s;
  s.push_back(std::make_unique<FakeSource>("sts", "ASIA", now + 3600 * kSecond, &calls));
  CredentialProvider p(ChainConfig{}, std::move(s), [&] { return now; });
  KmsContext ctx;
  EXPECT_EQ(p.get(ctx).access_key.view(), "ASIA1");
  now += 3000 * kSecond;  // 10 minutes left: still cached
  EXPECT_EQ(p.get(ctx).access_key.view(), "ASIA1");
  EXPECT_EQ(p.get(ctx).expires_at_us, 4600 * kSecond);
  now += 301 * kSecond;  // less than 5 minutes left: fetched again
  EXPECT_EQ(p.get(ctx).access_key.view(), "ASIA2");
  EXPECT_EQ(calls, 2);
  EXPECT_TRUE(p.invalidate());
  EXPECT_EQ(p.get(ctx).access_key.view(), "ASIA3");
}

TEST(AwsCredentialChain, DefaultOrder) {
  ChainConfig cfg;
  auto sources = default_sources(cfg);
  std::vector<std::string> names;
  for (const auto& src : sources) names.emplace_back(src->name());
  EXPECT_EQ(names, (std::vector<std::string>{"environment", "web identity", "shared credentials file", "container",
                                             "EC2 instance metadata"}));
}

TEST(AwsCredentialExpiry, RefreshTime) {
  const std::int64_t t = 1000 * kSecond;
  EXPECT_EQ(credential_refresh_at_us(t + 3600 * kSecond, t), t + 3300 * kSecond);  // 5 minutes early
  EXPECT_EQ(credential_refresh_at_us(t + 6 * kSecond, t), t + 3 * kSecond);        // half a short lifetime
  EXPECT_EQ(credential_refresh_at_us(t, t), t);                                     // expired: this call only
  EXPECT_EQ(credential_refresh_at_us(t - kSecond, t), t);
  EXPECT_EQ(credential_refresh_at_us(t + 1, t), t + 1);
}

// ------------------------------------------------------------------ STS XML

HttpResponse response(long status, std::string_view body) {
  HttpResponse r;
  r.status = status;
  r.body = SecretString(body);
  return r;
}

constexpr const char* kAssumeRoleXml =
    "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
    "  <AssumeRoleResult>\n"
    "    <SourceIdentity>Alice</SourceIdentity>\n"
    "    <AssumedRoleUser>\n"
    "      <Arn>arn:aws:sts::123456789012:assumed-role/demo/TestAR</Arn>\n"
    "      <AssumedRoleId>ARO123EXAMPLE123:TestAR</AssumedRoleId>\n"
    "    </AssumedRoleUser>\n"
    "    <Credentials>\n"
    "      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>\n"
    "      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>\n"
    "      <SessionToken>AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQW</SessionToken>\n"
    "      <Expiration>2019-11-09T13:34:41Z</Expiration>\n"
    "    </Credentials>\n"
    "    <PackedPolicySize>6</PackedPolicySize>\n"
    "  </AssumeRoleResult>\n"
    "  <ResponseMetadata>\n"
    "    <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>\n"
    "  </ResponseMetadata>\n"
    "</AssumeRoleResponse>\n";

TEST(AwsSts, ParsesAssumeRole) {
  Credentials c = parse_sts_response(response(200, kAssumeRoleXml), "AssumeRole", "a", "role");
  EXPECT_EQ(c.access_key.view(), "ASIAIOSFODNN7EXAMPLE");
  EXPECT_EQ(c.secret_key.view(), "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY");
  EXPECT_EQ(c.session_token.view(), "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQW");
  EXPECT_EQ(c.expires_at_us, 1573306481LL * kSecond);
  // The same document under the other action's name has no such credentials.
  auto e = catch_error([] { parse_sts_response(response(200, kAssumeRoleXml), "AssumeRoleWithWebIdentity", "a", "r"); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "28000");
  EXPECT_TRUE(error_mentions(*e, "malformed response"));
}

TEST(AwsSts, ParsesWebIdentityWithPrefixesEntitiesAndCdata) {
  const char* xml =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- comment -->"
      "<sts:AssumeRoleWithWebIdentityResponse xmlns:sts='https://sts.amazonaws.com/doc/2011-06-15/'>"
      "<sts:AssumeRoleWithWebIdentityResult><SubjectFromWebIdentityToken>system:sa</SubjectFromWebIdentityToken>"
      "<sts:Credentials><AccessKeyId>ASIA0000000000000001</AccessKeyId>"
      "<SecretAccessKey>a&amp;b&#x2F;c&#47;d</SecretAccessKey>"
      "<SessionToken><![CDATA[tok+en/=]]></SessionToken>"
      "<Expiration>2026-12-03T10:00:00.000Z</Expiration></sts:Credentials>"
      "</sts:AssumeRoleWithWebIdentityResult></sts:AssumeRoleWithWebIdentityResponse>";
  Credentials c = parse_sts_response(response(200, xml), "AssumeRoleWithWebIdentity", "a", "r");
  EXPECT_EQ(c.secret_key.view(), "a&b/c/d");
  EXPECT_EQ(c.session_token.view(), "tok+en/=");
}

TEST(AwsSts, Errors) {
  const char* denied =
      "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>"
      "<Code>AccessDenied</Code><Message>User: arn:aws:iam::1:user/u is not authorized to perform: "
      "sts:AssumeRole on resource: arn:aws:iam::1:role/r</Message></Error><RequestId>x</RequestId></ErrorResponse>";
  auto e = catch_error([&] { parse_sts_response(response(403, denied), "AssumeRole", "aws", "role \"r\""); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "28000");
  EXPECT_STREQ(e->what(), "KMS \"aws\" AssumeRole failed: AccessDenied");
  EXPECT_TRUE(error_mentions(*e, "not authorized to perform"));
  EXPECT_EQ(judge_sts_response(response(403, denied)), Verdict::kFail);

  const char* throttled = "<ErrorResponse><Error><Code>Throttling</Code><Message>Rate exceeded</Message></Error>"
                          "</ErrorResponse>";
  EXPECT_EQ(judge_sts_response(response(400, throttled)), Verdict::kRetry);
  e = catch_error([&] { parse_sts_response(response(400, throttled), "AssumeRole", "aws", "r"); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "58000");
  EXPECT_EQ(judge_sts_response(response(503, "")), Verdict::kRetry);
  e = catch_error([&] { parse_sts_response(response(502, "<html>bad gateway"), "AssumeRole", "aws", "r"); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "58000");
  EXPECT_STREQ(e->what(), "KMS \"aws\" AssumeRole failed: HTTP 502");
  // A code that is not a word is not shown.
  e = catch_error([&] {
    parse_sts_response(response(400, "<ErrorResponse><Error><Code>a b&lt;</Code></Error></ErrorResponse>"),
                       "AssumeRole", "aws", "r");
  });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->what(), "KMS \"aws\" AssumeRole failed: HTTP 400");
}

TEST(AwsSts, MalformedDocumentsAreRefused) {
  std::string good = kAssumeRoleXml;
  auto refused = [](const std::string& xml) {
    auto e = catch_error([&] { parse_sts_response(response(200, xml), "AssumeRole", "a", "r"); });
    return e.has_value() && std::string(e->sqlstate()) == "28000";
  };
  EXPECT_FALSE(refused(good));
  EXPECT_TRUE(refused(""));
  EXPECT_TRUE(refused("<!DOCTYPE x [<!ENTITY e \"x\">]>" + good));
  EXPECT_TRUE(refused(good.substr(0, good.size() - 10)));                       // unclosed root
  EXPECT_TRUE(refused(good + "<second/>"));                                      // two roots
  EXPECT_TRUE(refused(std::string(good).replace(good.find("</Expiration>"), 13, "</Expiry>")));  // mismatched
  EXPECT_TRUE(refused(std::string(good).replace(good.find("EXAMPLEKEY"), 10, "&unknown;")));
  EXPECT_TRUE(refused(std::string(good).replace(good.find("EXAMPLEKEY"), 10, "&#0;")));
  EXPECT_TRUE(refused(std::string(good).replace(good.find("2019-11-09"), 10, "yesterday!")));
  EXPECT_TRUE(refused(std::string(good).replace(good.find("ASIAIOSFODNN7EXAMPLE"), 20, "ASIA:OSFODNN7EXAMPLE")));
  EXPECT_TRUE(refused(std::string(good).replace(good.find("wJalr"), 5, "w Jal")));  // a space in the secret
  std::string deep;
  for (int i = 0; i < 70; ++i) deep += "<a>";
  EXPECT_TRUE(refused(deep));
  SecretString out;
  EXPECT_FALSE(xml_text(deep, {"a"}, out));
  EXPECT_TRUE(xml_text("<a><b x='1>' y=\"2\">v&lt;w</b><b>second</b></a>", {"a", "b"}, out));
  EXPECT_EQ(out.view(), "v<w");
  EXPECT_TRUE(xml_text("<a><b/></a>", {"a", "b"}, out));
  EXPECT_TRUE(out.empty());
  EXPECT_FALSE(xml_text("<a><b>x</a></b>", {"a", "b"}, out));
  EXPECT_TRUE(out.empty());  // what was read before the error is not handed out (found by fuzz_kms_aws_sts)
  EXPECT_FALSE(xml_text("<a><b>partial</b>\x01<", {"a", "b"}, out));
  EXPECT_TRUE(out.empty());
  EXPECT_FALSE(xml_text("text<a/>", {"a"}, out));
}

TEST(AwsSts, FormEncodingAndEndpoints) {
  SecretString s;
  append_form_value(s, "arn:aws:iam::1:role/a b+c=d~e_f.g-h");
  EXPECT_EQ(s.view(), "arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fa%20b%2Bc%3Dd~e_f.g-h");
  EXPECT_EQ(default_sts_endpoint("eu-west-1"), "https://sts.eu-west-1.amazonaws.com");
  EXPECT_EQ(default_sts_endpoint("cn-north-1"), "https://sts.cn-north-1.amazonaws.com.cn");
}

TEST(AwsSts, RoleOptionsAreChecked) {
  auto bad = [](RoleConfig r) {
    auto e = catch_error([&] { validate_role_config(r, "aws"); });
    return e.has_value() && std::string(e->sqlstate()) == "22023";
  };
  EXPECT_FALSE(bad({}));
  EXPECT_FALSE(bad({"arn:aws:iam::123456789012:role/pg", "ext-id:1", "pg_envelope", 3600}));
  EXPECT_FALSE(bad({"arn:aws-cn:iam::123456789012:role/path/to/pg", "", "", 0}));
  EXPECT_TRUE(bad({"arn:aws:iam::12345678901:role/pg", "", "", 0}));      // 11-digit account
  EXPECT_TRUE(bad({"arn:aws:iam::123456789012:user/pg", "", "", 0}));
  EXPECT_TRUE(bad({"arn:aws:iam::123456789012:role/", "", "", 0}));
  EXPECT_TRUE(bad({"arn:aws:iam::123456789012:role/pg\n", "", "", 0}));
  EXPECT_TRUE(bad({"arn:aws:iam::123456789012:role/pg", "x", "", 0}));     // external id too short
  EXPECT_TRUE(bad({"arn:aws:iam::123456789012:role/pg", "a b", "", 0}));
  EXPECT_TRUE(bad({"arn:aws:iam::123456789012:role/pg", "", "has/slash", 0}));
  EXPECT_TRUE(bad({"arn:aws:iam::123456789012:role/pg", "", "", 899}));
  EXPECT_TRUE(bad({"arn:aws:iam::123456789012:role/pg", "", "", 43201}));
  EXPECT_TRUE(bad({"", "ext-id", "", 0}));  // role options without a role
  EXPECT_EQ(session_name_or_default("mine"), "mine");
  EXPECT_EQ(session_name_or_default("").rfind("pg_envelope-", 0), 0u);
}

// ------------------------------------------------------------------ container / IMDS JSON

TEST(AwsCredentialsJson, ContainerAndImdsAnswers) {
  const char* ecs =
      "{\"AccessKeyId\":\"ASIAECS0000000000001\",\"SecretAccessKey\":\"ecs/secret\",\"Token\":\"ecs-token\","
      "\"Expiration\":\"2026-12-03T12:00:00Z\",\"RoleArn\":\"arn:aws:iam::1:role/task\"}";
  Credentials c = parse_credentials_json(response(200, ecs), "a", "container credentials request", "E");
  EXPECT_EQ(c.access_key.view(), "ASIAECS0000000000001");
  EXPECT_EQ(c.session_token.view(), "ecs-token");
  std::int64_t want = 0;
  ASSERT_TRUE(parse_rfc3339("2026-12-03T12:00:00Z", want));
  EXPECT_EQ(c.expires_at_us, want);
  const char* imds =
      "{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"2026-12-03T11:00:00Z\",\n  \"Type\" : \"AWS-HMAC\",\n"
      "  \"AccessKeyId\" : \"ASIAIMDS000000000001\",\n  \"SecretAccessKey\" : \"imds/secret\",\n"
      "  \"Token\" : \"imds-token\",\n  \"Expiration\" : \"2026-12-03T17:00:00Z\"\n}";
  EXPECT_EQ(parse_credentials_json(response(200, imds), "a", "op", "I").access_key.view(), "ASIAIMDS000000000001");

  auto err = [](long status, const std::string& body) {
    return catch_error([&] { parse_credentials_json(response(status, body), "a", "op", "The endpoint"); });
  };
  auto e = err(200, std::string(imds).replace(std::string(imds).find("Success"), 7, "Failure"));
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "28000");
  e = err(200, "{\"AccessKeyId\":\"ASIAECS0000000000001\",\"SecretAccessKey\":\"s\",\"Token\":\"t\"}");
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(error_mentions(*e, "Expiration"));
  e = err(200, "{\"AccessKeyId\":\"AS:A\",\"SecretAccessKey\":\"s\",\"Token\":\"t\",\"Expiration\":\"2026-12-03T17:00:00Z\"}");
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(error_mentions(*e, "malformed credentials"));
  e = err(200, "[1]");
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(error_mentions(*e, "malformed response"));
  e = err(401, "{\"message\":\"invalid \\\"secret-token\\\" sent\"}");
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "28000");
  EXPECT_STREQ(e->what(), "KMS \"a\" op failed: HTTP 401");
  EXPECT_FALSE(error_mentions(*e, "secret-token"));  // quoted spans of service text are dropped
  e = err(500, "");
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "58000");
}

TEST(AwsCredentialsJson, ContainerUrls) {
  for (const char* ok : {"http://127.0.0.1:8080/creds", "http://[::1]/v1", "http://localhost/x", "https://example.com/c",
                         "http://169.254.170.2/v2/credentials/abc", "http://169.254.170.23/v1/credentials",
                         "http://[fd00:ec2::23]/v1/credentials"})
    EXPECT_TRUE(container_url_allowed(ok)) << ok;
  for (const char* no : {"http://10.0.0.1/creds", "http://169.254.169.254/latest", "ftp://127.0.0.1/x",
                         "http://127.0.0.1.example.com/", "http://user@127.0.0.1/", "", "not a url"})
    EXPECT_FALSE(container_url_allowed(no)) << no;
}

}  // namespace
}  // namespace pg_envelope::remote::aws
