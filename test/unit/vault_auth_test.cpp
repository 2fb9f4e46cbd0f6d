// Vault login methods of the vault-transit provider without a network
// (src/kms/vault_auth.hpp): login and renew-self responses read by
// parse_auth_response(), the renewal timing of next_action(), and the options of each
// method checked by the provider's constructor (make_kms_provider), plus credential
// files that fail before any request.
#include <gtest/gtest.h>

#include <string>

#include "kms/vault_auth.hpp"
#include "pg_envelope/error.hpp"
#include "pg_envelope/kms.hpp"
#include "test_support.hpp"

namespace pg_envelope {
namespace {

using remote::vault::AuthLease;
using remote::vault::LeaseState;
using remote::vault::TokenAction;
using test::catch_error;
using test::error_mentions;
using test::TempFile;

HttpResult response(long status, const std::string& body, HttpFailure failure = HttpFailure::kNone) {
  HttpResult r;
  r.response.status = status;
  r.response.body = SecretString(body);
  r.failure = failure;
  r.attempts = 1;
  if (failure != HttpFailure::kNone) r.failure_text = "connection refused";
  return r;
}

AuthLease parse(long status, const std::string& body, std::initializer_list<std::string_view> withhold = {}) {
  return remote::vault::parse_auth_response(response(status, body), "vault", "login",
                                            "The AppRole login at https://vault:8200 (auth mount \"approle\")",
                                            withhold);
}

void expect_error(const char* state, const std::function<void()>& fn, const std::string& needle = "") {
  auto e = catch_error(fn);
  ASSERT_TRUE(e.has_value()) << "no error; expected " << state;
  EXPECT_STREQ(e->sqlstate(), state) << e->what() << " / " << e->detail();
  if (!needle.empty()) {
    EXPECT_TRUE(error_mentions(*e, needle)) << "\"" << needle << "\" not in: " << e->what() << " / " << e->detail();
  }
}

// ---------------------------------------------------------------- responses

TEST(VaultAuthResponse, ReadsTheAuthBlockOfALogin) {
  AuthLease a = parse(200, R"({"request_id":"r","lease_id":"","renewable":false,"lease_duration":0,"data":null,
    "warnings":null,"auth":{"client_token":"hvs.CAESIabc","accessor":"acc","policies":["default"],
    "lease_duration":2764800,"renewable":true,"token_type":"service","orphan":true}})");
  EXPECT_EQ(a.client_token.view(), "hvs.CAESIabc");
  EXPECT_EQ(a.lease_seconds, 2764800);
  EXPECT_TRUE(a.renewable);
  // A token that never expires (lease 0), renewable absent: not renewable.
  AuthLease root = parse(200, R"({"auth":{"client_token":"s.root","lease_duration":0}})");
  EXPECT_EQ(root.lease_seconds, 0);
  EXPECT_FALSE(root.renewable);
}

TEST(VaultAuthResponse, RefusalsAre28000WithVaultsTextAndStatus) {
  auto e = catch_error([] { parse(400, R"({"errors":["invalid role or secret ID"]})"); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "28000");
  EXPECT_STREQ(e->what(), "KMS \"vault\" login failed: HTTP 400 invalid role or secret ID");
  EXPECT_TRUE(error_mentions(*e, "AppRole login at https://vault:8200")) << e->detail();
  expect_error("28000", [] { parse(403, R"({"errors":["permission denied"]})"); }, "HTTP 403 permission denied");
  expect_error("28000", [] { parse(404, R"({"errors":["no handler for route \"auth/nope/login\"."]})"); }, "HTTP 404");
  expect_error("28000", [] { parse(401, "not json"); }, "HTTP 401");
}

TEST(VaultAuthResponse, UnavailableAndTransportFailuresAre58000) {
  expect_error("58000", [] { parse(503, R"({"errors":["Vault is sealed"]})"); }, "Vault is sealed");
  expect_error("58000", [] { parse(429, "{}"); }, "HTTP 429");
  expect_error("58000", [] {
    remote::vault::parse_auth_response(response(0, "", HttpFailure::kConnect), "vault", "login", "x");
  }, "unreachable");
}

TEST(VaultAuthResponse, ErrorTextQuotingTheCredentialIsWithheld) {
  auto e = catch_error([] {
    parse(400, R"({"errors":["invalid secret_id \"s3cr3t-id-value\""]})", {"s3cr3t-id-value"});
  });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "28000");
  EXPECT_FALSE(error_mentions(*e, "s3cr3t-id-value")) << e->what();
  EXPECT_TRUE(error_mentions(*e, "withheld")) << e->what();
}

TEST(VaultAuthResponse, MalformedResponsesAre28000WithoutTheToken) {
  const char* bad[] = {
      "",
      "[]",
      R"({"auth":null})",
      R"({"data":{"client_token":"hvs.x"}})",
      R"({"auth":{"lease_duration":60}})",
      R"({"auth":{"client_token":"","lease_duration":60}})",
      R"({"auth":{"client_token":"hvs.a b","lease_duration":60}})",
      R"({"auth":{"client_token":"hvs.a\r\nX-Injected: 1","lease_duration":60}})",
      R"({"auth":{"client_token":42,"lease_duration":60}})",
      R"({"auth":{"client_token":"hvs.x"}})",
      R"({"auth":{"client_token":"hvs.x","lease_duration":-5}})",
      R"({"auth":{"client_token":"hvs.x","lease_duration":1.5}})",
      R"({"auth":{"client_token":"hvs.x","lease_duration":"60"}})",
      R"({"auth":{"client_token":"hvs.x","lease_duration":1000000000}})",
      R"({"auth":{"client_token":"hvs.x","lease_duration":60,"renewable":"yes"}})",
  };
  for (const char* body : bad) {
    SCOPED_TRACE(body);
    auto e = catch_error([&] { parse(200, body); });
    ASSERT_TRUE(e.has_value());
    EXPECT_STREQ(e->sqlstate(), "28000");
    EXPECT_TRUE(error_mentions(*e, "malformed response")) << e->what();
    EXPECT_FALSE(error_mentions(*e, "hvs.")) << e->what() << " / " << e->detail();
  }
}

TEST(VaultAuthResponse, RetryVerdict) {
  for (long s : {200L, 204L}) EXPECT_EQ(remote::vault::judge_auth(response(s, "").response), Verdict::kSuccess);
  for (long s : {429L, 500L, 502L, 503L, 504L})
    EXPECT_EQ(remote::vault::judge_auth(response(s, "").response), Verdict::kRetry);
  for (long s : {400L, 401L, 403L, 404L, 501L})
    EXPECT_EQ(remote::vault::judge_auth(response(s, "").response), Verdict::kFail);
}

// ---------------------------------------------------------------- renewal timing

TEST(VaultTokenTiming, RenewsAtTwoThirdsAndLogsInAtExpiry) {
  LeaseState l{1000000, 3600, true, false};
  EXPECT_EQ(remote::vault::next_action(l, 1000000), TokenAction::kUse);
  EXPECT_EQ(remote::vault::next_action(l, 1000000 + 2399999), TokenAction::kUse);
  EXPECT_EQ(remote::vault::next_action(l, 1000000 + 2400000), TokenAction::kRenew);
  EXPECT_EQ(remote::vault::next_action(l, 1000000 + 3598999), TokenAction::kRenew);
  EXPECT_EQ(remote::vault::next_action(l, 1000000 + 3599000), TokenAction::kLogin);  // 1 s early
  EXPECT_EQ(remote::vault::next_action(l, 1000000 + 99999999), TokenAction::kLogin);
  EXPECT_EQ(remote::vault::lease_expiry_ms(l), 1000000 + 3600000);
}

TEST(VaultTokenTiming, NotRenewableOrCappedTokensAreReplacedByALogin) {
  LeaseState fixed{0, 60, false, false};
  EXPECT_EQ(remote::vault::next_action(fixed, 39999), TokenAction::kUse);
  EXPECT_EQ(remote::vault::next_action(fixed, 40000), TokenAction::kLogin);
  LeaseState capped{0, 60, true, true};
  EXPECT_EQ(remote::vault::next_action(capped, 39999), TokenAction::kUse);
  EXPECT_EQ(remote::vault::next_action(capped, 40000), TokenAction::kLogin);
}

TEST(VaultTokenTiming, ShortLeasesStillReachTheirRenewal) {
  LeaseState l{0, 3, true, false};
  EXPECT_EQ(remote::vault::next_action(l, 1999), TokenAction::kUse);
  EXPECT_EQ(remote::vault::next_action(l, 2000), TokenAction::kRenew);
  EXPECT_EQ(remote::vault::next_action(l, 2699), TokenAction::kRenew);
  EXPECT_EQ(remote::vault::next_action(l, 2700), TokenAction::kLogin);  // a tenth early
  LeaseState one{0, 1, true, false};
  EXPECT_EQ(remote::vault::next_action(one, 665), TokenAction::kUse);
  EXPECT_EQ(remote::vault::next_action(one, 666), TokenAction::kRenew);
  EXPECT_EQ(remote::vault::next_action(one, 899), TokenAction::kRenew);
  EXPECT_EQ(remote::vault::next_action(one, 900), TokenAction::kLogin);
}

TEST(VaultTokenTiming, LeaseZeroNeverExpires) {
  LeaseState l{0, 0, false, false};
  EXPECT_EQ(remote::vault::next_action(l, 0), TokenAction::kUse);
  EXPECT_EQ(remote::vault::next_action(l, std::int64_t{1} << 60), TokenAction::kUse);
  EXPECT_EQ(remote::vault::lease_expiry_ms(l), 0);
}

TEST(VaultTokenTiming, IncrementAndCap) {
  EXPECT_EQ(remote::vault::renew_increment(3600), 3600);
  EXPECT_EQ(remote::vault::renew_increment(0), 1);
  EXPECT_FALSE(remote::vault::renewal_capped(3600, 3600));
  EXPECT_FALSE(remote::vault::renewal_capped(3600, 7200));
  EXPECT_TRUE(remote::vault::renewal_capped(3600, 1200));
}

// ---------------------------------------------------------------- options

KmsContext no_env() {
  KmsContext c;
  c.getenv = [](const char*) -> const char* { return nullptr; };
  c.http.max_attempts = 1;
  c.http.connect_timeout_ms = 500;
  c.http.attempt_timeout_ms = 1000;
  c.http.total_budget_ms = 1000;
  return c;
}

std::unique_ptr<KmsProvider> vault(const std::string& extra) {
  std::string options = R"({"address": "http://127.0.0.1:9")" + (extra.empty() ? "" : ", " + extra) + "}";
  return make_kms_provider(KmsConfig{"vault", "vault-transit", options}, no_env());
}

TEST(VaultAuthOptions, EachMethodsMinimalOptionsAreAccepted) {
  EXPECT_NO_THROW(vault(""));
  EXPECT_NO_THROW(vault(R"("auth_method": "token", "token_file": "/etc/vault.token")"));
  EXPECT_NO_THROW(vault(R"("auth_method": "approle", "role_id": "db-role-id", "secret_id_file": "/s")"));
  EXPECT_NO_THROW(vault(R"("auth_method": "approle", "role_id_file": "/r", "secret_id_file": "/s", "auth_mount": "ar/prod")"));
  EXPECT_NO_THROW(vault(R"("auth_method": "kubernetes", "role": "db")"));  // the service-account token by default
  EXPECT_NO_THROW(vault(R"("auth_method": "kubernetes", "role": "db", "jwt_file": "/t", "auth_mount": "k8s-east")"));
  EXPECT_NO_THROW(vault(R"("auth_method": "jwt", "role": "ci", "jwt_file": "/t", "namespace": "team-a")"));
}

TEST(VaultAuthOptions, TwoMethodsOrBadValuesAre22023) {
  struct Case {
    const char* options;
    const char* needle;
  } cases[] = {
      {R"("auth_method": "approle", "role_id": "r", "secret_id_file": "/s", "token_file": "/t")", "two Vault auth methods"},
      {R"("token_file": "/t", "role": "r")", "two Vault auth methods"},
      {R"("secret_id_file": "/s")", "two Vault auth methods"},
      {R"("auth_method": "jwt", "role": "r", "jwt_file": "/t", "role_id": "x")", "two Vault auth methods"},
      {R"("auth_method": "kubernetes", "role": "r", "secret_id_file": "/s")", "two Vault auth methods"},
      {R"("auth_method": "approle", "role": "r", "role_id": "x", "secret_id_file": "/s")", "two Vault auth methods"},
      {R"("auth_method": "ldap")", "invalid \"auth_method\""},
      {R"("auth_method": 1)", "must be a string"},
      {R"("auth_method": "approle", "secret_id_file": "/s")", "\"role_id_file\""},
      {R"("auth_method": "approle", "role_id": "x", "role_id_file": "/r", "secret_id_file": "/s")", "\"role_id_file\""},
      {R"("auth_method": "approle", "role_id": "x")", "\"secret_id_file\""},
      {R"("auth_method": "approle", "role_id": "x y", "secret_id_file": "/s")", "invalid \"role_id\""},
      {R"("auth_method": "kubernetes")", "needs option \"role\""},
      {R"("auth_method": "jwt", "role": "r")", "needs option \"jwt_file\""},
      {R"("auth_method": "jwt", "role": "r\n", "jwt_file": "/t")", "invalid \"role\""},
      {R"("auth_method": "jwt", "role": "r", "jwt_file": "t")", "absolute paths"},
      {R"("auth_method": "approle", "role_id": "x", "secret_id_file": "/s", "auth_mount": "/approle")", "\"auth_mount\""},
      {R"("auth_method": "approle", "role_id": "x", "secret_id_file": "/s", "auth_mount": "a?b")", "\"auth_mount\""},
      {R"("auth_method": "approle", "role_id": "x", "secret_id": "s")", "looks like a secret"},
      {R"("auth_method": "jwt", "role": "r", "jwt": "eyJ")", "unknown option \"jwt\""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.options);
    expect_error("22023", [&] { vault(c.options); }, c.needle);
  }
}

TEST(VaultAuthOptions, NoStaticTokenNamesTheLoginOption) {
  auto kms = vault("");
  expect_error("28000", [&] { kms->wrap("pg-envelope", DekBinding{"ssn", 1, 1}, Bytes(32, 1)); }, "auth_method");
}

// The credential files are read before the login request: their problems come
// first, with the errors of the token file.
TEST(VaultAuthOptions, CredentialFileProblemsComeBeforeAnyRequest) {
  const DekBinding b{"ssn", 1, 1};
  const Bytes dek(32, 1);
  TempFile world("5ecret-id\n", 0604);
  auto approle = vault(R"("auth_method": "approle", "role_id": "x", "secret_id_file": ")" + world.path() + "\"");
  expect_error("F0000", [&] { approle->wrap("pg-envelope", b, dek); }, "the secret_id file of KMS \"vault\" is world-accessible");
  TempFile role_world("role\n", 0644);
  TempFile secret("5ecret-id\n", 0600);
  auto approle2 = vault(R"("auth_method": "approle", "role_id_file": ")" + role_world.path() +
                        R"(", "secret_id_file": ")" + secret.path() + "\"");
  expect_error("F0000", [&] { approle2->wrap("pg-envelope", b, dek); }, "role_id file");
  auto jwt = vault(R"("auth_method": "jwt", "role": "r", "jwt_file": "/nonexistent/pg_envelope/jwt")");
  expect_error("58P01", [&] { jwt->wrap("pg-envelope", b, dek); }, "/nonexistent/pg_envelope/jwt");
  TempFile empty(" \n", 0600);
  auto k8s = vault(R"("auth_method": "kubernetes", "role": "r", "jwt_file": ")" + empty.path() + "\"");
  expect_error("F0000", [&] { k8s->wrap("pg-envelope", b, dek); }, "JWT file");
}

// With valid files, the login is attempted: nothing listens on port 9, so the error
// is the login's transport failure, and names neither the secret ID nor the JWT.
TEST(VaultAuthOptions, UnreachableLoginIs58000WithoutCredentials) {
  TempFile secret("5ecret-id-value\n", 0600);
  auto kms = vault(R"("auth_method": "approle", "role_id": "x", "secret_id_file": ")" + secret.path() + "\"");
  auto e = catch_error([&] { kms->wrap("pg-envelope", DekBinding{"ssn", 1, 1}, Bytes(32, 1)); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "58000") << e->what();
  EXPECT_TRUE(error_mentions(*e, "login failed")) << e->what();
  EXPECT_FALSE(error_mentions(*e, "5ecret-id-value"));
}

}  // namespace
}  // namespace pg_envelope
