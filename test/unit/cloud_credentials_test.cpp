// GCP service-account keys and Azure AD client credentials without a network
// (src/kms/jwt.hpp, oauth_token.hpp, gcp_credentials.hpp, azure_credentials.hpp):
// RS256 JWTs built by pg_envelope and verified here with OpenSSL against the public
// key, certificate thumbprints, service-account file parsing, token responses, the
// per-backend token cache, the order of BearerToken's sources, and the options the
// providers' constructors check.
#include <gtest/gtest.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "kms/azure_credentials.hpp"
#include "kms/bearer_token.hpp"
#include "kms/gcp_credentials.hpp"
#include "kms/jwt.hpp"
#include "kms/oauth_token.hpp"
#include "pg_envelope/encoding.hpp"
#include "pg_envelope/error.hpp"
#include "pg_envelope/kms.hpp"
#include "test_support.hpp"

namespace pg_envelope {
namespace {

using test::catch_error;
using test::error_mentions;
using test::TempFile;

void expect_error(const char* state, const std::function<void()>& fn, const std::string& needle = "") {
  auto e = catch_error(fn);
  ASSERT_TRUE(e.has_value()) << "no error; expected " << state;
  EXPECT_STREQ(e->sqlstate(), state) << e->what() << " / " << e->detail();
  if (!needle.empty()) {
    EXPECT_TRUE(error_mentions(*e, needle)) << "\"" << needle << "\" not in: " << e->what() << " / " << e->detail();
  }
}

// ---------------------------------------------------------------- test keys

struct Pkey {
  EVP_PKEY* p = nullptr;
  ~Pkey() { EVP_PKEY_free(p); }
};

EVP_PKEY* new_rsa() { return EVP_RSA_gen(2048); }

std::string to_pem(EVP_PKEY* k) {
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(b, k, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  std::string s(data, n);
  BIO_free(b);
  return s;
}

X509* self_signed(EVP_PKEY* k) {
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 42);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, k);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("pg-envelope"), -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509_sign(x, k, EVP_sha256());
  return x;
}

std::string cert_pem(X509* x) {
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, x);
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  std::string s(data, n);
  BIO_free(b);
  return s;
}

std::string b64url_text(std::string_view s) {
  SecureBytes out;
  EXPECT_TRUE(base64url_decode(s, out)) << s;
  return std::string(reinterpret_cast<const char*>(out.data()), out.size());
}

struct Jwt {
  nlohmann::json header, claims;
  std::string signing_input, signature;
};

Jwt split(std::string_view token) {
  Jwt j;
  std::size_t a = token.find('.'), b = token.rfind('.');
  EXPECT_NE(a, b);
  j.header = nlohmann::json::parse(b64url_text(token.substr(0, a)));
  j.claims = nlohmann::json::parse(b64url_text(token.substr(a + 1, b - a - 1)));
  j.signing_input = std::string(token.substr(0, b));
  j.signature = b64url_text(token.substr(b + 1));
  return j;
}

// RS256 verification with OpenSSL, independent of the code under test.
bool verify(EVP_PKEY* k, const std::string& input, const std::string& sig) {
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  bool ok = EVP_DigestVerifyInit(md, nullptr, EVP_sha256(), nullptr, k) == 1 &&
            EVP_DigestVerify(md, reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                             reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
  EVP_MD_CTX_free(md);
  return ok;
}

std::string sa_json(const std::string& pem, const std::string& extra = "") {
  nlohmann::json j = {{"type", "service_account"},
                      {"project_id", "p"},
                      {"private_key_id", "0123abcd"},
                      {"private_key", pem},
                      {"client_email", "pg@p.iam.gserviceaccount.com"},
                      {"token_uri", "https://oauth2.googleapis.com/token"}};
  if (!extra.empty()) j.merge_patch(nlohmann::json::parse(extra));
  return j.dump();
}

// ---------------------------------------------------------------- JWT

TEST(CloudJwt, ServiceAccountAssertionVerifiesWithThePublicKey) {
  Pkey k{new_rsa()};
  std::string pem = to_pem(k.p);
  auto key = remote::gcp::parse_service_account_key(sa_json(pem), "g", "file");
  SecretString a = remote::gcp::service_account_assertion(key, "https://oauth2.googleapis.com/token", 1700000000, "g", "f");
  Jwt j = split(a.view());
  EXPECT_EQ(j.header, (nlohmann::json{{"alg", "RS256"}, {"typ", "JWT"}, {"kid", "0123abcd"}}));
  EXPECT_EQ(j.claims, (nlohmann::json{{"iss", "pg@p.iam.gserviceaccount.com"},
                                      {"scope", "https://www.googleapis.com/auth/cloudkms"},
                                      {"aud", "https://oauth2.googleapis.com/token"},
                                      {"iat", 1700000000},
                                      {"exp", 1700003600}}));
  EXPECT_EQ(j.signature.size(), 256u);
  EXPECT_TRUE(verify(k.p, j.signing_input, j.signature));
  // A changed claim or another key fails: the check above can fail.
  std::string tampered = j.signing_input;
  tampered[tampered.size() - 2] ^= 1;
  EXPECT_FALSE(verify(k.p, tampered, j.signature));
  Pkey other{new_rsa()};
  EXPECT_FALSE(verify(other.p, j.signing_input, j.signature));
  // RSASSA-PKCS1-v1_5 is deterministic: the same input signs the same.
  SecretString again = remote::gcp::service_account_assertion(key, "https://oauth2.googleapis.com/token", 1700000000, "g", "f");
  EXPECT_EQ(a.view(), again.view());
}

TEST(CloudJwt, NoKidWithoutAPrivateKeyId) {
  Pkey k{new_rsa()};
  auto key = remote::gcp::parse_service_account_key(sa_json(to_pem(k.p), R"({"private_key_id": null})"), "g", "f");
  Jwt j = split(remote::gcp::service_account_assertion(key, "https://t", 1, "g", "f").view());
  EXPECT_FALSE(j.header.contains("kid"));
}

TEST(CloudJwt, RefusesKeysItCannotUseWithoutQuotingThem) {
  remote::json hdr = remote::json::object();
  hdr["alg"] = "RS256";
  remote::json claims = remote::json::object();
  std::string garbage = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXNlY3JldC1zZWNyZXQ=\n-----END PRIVATE KEY-----\n";
  expect_error("F0000", [&] { remote::jwt::sign_rs256(hdr, claims, garbage, "g", "the file \"/k\""); }, "/k");
  auto e = catch_error([&] { remote::jwt::sign_rs256(hdr, claims, garbage, "g", "the file \"/k\""); });
  ASSERT_TRUE(e);
  EXPECT_FALSE(error_mentions(*e, "c2VjcmV0"));
  // An EC key is not an RSA key.
  Pkey ec{EVP_EC_gen("P-256")};
  expect_error("F0000", [&] { remote::jwt::sign_rs256(hdr, claims, to_pem(ec.p), "g", "f"); }, "not an RSA key");
  // An encrypted key is refused, never prompted for.
  Pkey k{new_rsa()};
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(b, k.p, EVP_aes_128_cbc(), nullptr, 0, nullptr, const_cast<char*>("passphrase"));
  char* data = nullptr;
  long len = BIO_get_mem_data(b, &data);
  std::string enc(data, len);
  ASSERT_NE(enc.find("ENCRYPTED PRIVATE KEY"), std::string::npos);
  BIO_free(b);
  expect_error("F0000", [&] { remote::jwt::sign_rs256(hdr, claims, enc, "g", "f"); }, "unencrypted");
}

TEST(CloudJwt, CertificateThumbprintsAndAzureAssertion) {
  Pkey k{new_rsa()};
  X509* x = self_signed(k.p);
  std::string pem = to_pem(k.p) + cert_pem(x);
  // Independent thumbprints: the digests of the DER encoding.
  unsigned char* der = nullptr;
  int n = i2d_X509(x, &der);
  unsigned char d256[32], d1[20];
  EVP_Digest(der, n, d256, nullptr, EVP_sha256(), nullptr);
  EVP_Digest(der, n, d1, nullptr, EVP_sha1(), nullptr);
  OPENSSL_free(der);
  std::string t256(base64url_encode(ByteView(d256, 32)).view()), t1(base64url_encode(ByteView(d1, 20)).view());
  auto t = remote::jwt::certificate_thumbprints(pem, "a", "f");
  EXPECT_EQ(t.sha256, t256);
  EXPECT_EQ(t.sha1, t1);
  EXPECT_EQ(t.sha256.size(), 43u);

  std::string url = "https://login.microsoftonline.com/tenant/oauth2/v2.0/token";
  SecretString a = remote::azure::certificate_assertion(pem, "client-1", url, 1700000000, "a", "f");
  Jwt j = split(a.view());
  EXPECT_EQ(j.header["alg"], "RS256");
  EXPECT_EQ(j.header["x5t#S256"], t256);
  EXPECT_EQ(j.header["x5t"], t1);
  EXPECT_EQ(j.claims["aud"], url);
  EXPECT_EQ(j.claims["iss"], "client-1");
  EXPECT_EQ(j.claims["sub"], "client-1");
  EXPECT_EQ(j.claims["nbf"], 1700000000);
  EXPECT_EQ(j.claims["exp"], 1700000600);
  EXPECT_EQ(j.claims["jti"].get<std::string>().size(), 32u);
  EXPECT_TRUE(verify(k.p, j.signing_input, j.signature));
  // Each assertion has its own jti.
  EXPECT_NE(split(remote::azure::certificate_assertion(pem, "client-1", url, 1700000000, "a", "f").view()).claims["jti"],
            j.claims["jti"]);

  // A certificate of another key, or none at all.
  Pkey other{new_rsa()};
  expect_error("F0000", [&] { remote::jwt::certificate_thumbprints(to_pem(other.p) + cert_pem(x), "a", "f"); },
               "does not belong");
  expect_error("F0000", [&] { remote::jwt::certificate_thumbprints(to_pem(k.p), "a", "f"); }, "no PEM certificate");
  X509_free(x);
}

// ---------------------------------------------------------------- service-account files

TEST(ServiceAccountFile, ParsesGooglesKeyFormat) {
  Pkey k{new_rsa()};
  std::string pem = to_pem(k.p);
  auto key = remote::gcp::parse_service_account_key(sa_json(pem), "g", "f");
  EXPECT_EQ(key.client_email, "pg@p.iam.gserviceaccount.com");
  EXPECT_EQ(key.private_key_id, "0123abcd");
  EXPECT_EQ(key.token_uri, "https://oauth2.googleapis.com/token");
  EXPECT_EQ(key.private_key.view(), pem);
  auto dflt = remote::gcp::parse_service_account_key(sa_json(pem, R"({"token_uri": null})"), "g", "f");
  EXPECT_EQ(dflt.token_uri, remote::gcp::kDefaultTokenUri);
  EXPECT_EQ(remote::gcp::credentials_type(sa_json(pem)), "service_account");
  EXPECT_EQ(remote::gcp::credentials_type(R"({"type": "authorized_user"})"), "authorized_user");
  EXPECT_EQ(remote::gcp::credentials_type("not json"), "");
}

TEST(ServiceAccountFile, RefusesOtherFilesWithoutQuotingThem) {
  const std::string pem = "-----BEGIN PRIVATE KEY-----\nTUlJRXZRSUJBREFOQmdrcWhr\n-----END PRIVATE KEY-----\n";
  struct Case {
    std::string text, needle;
  } cases[] = {
      {"not json TUlJRXZRSUJBREFOQmdrcWhr", "not a JSON object"},
      {"[]", "not a JSON object"},
      {sa_json(pem, R"({"type": "authorized_user"})"), "authorized_user"},
      {sa_json(pem, R"({"type": null})"), "no \"type\""},
      {sa_json(pem, R"({"client_email": null})"), "client_email"},
      {sa_json(pem, R"({"client_email": "no-at-sign"})"), "client_email"},
      {sa_json(pem, R"({"client_email": 7})"), "client_email"},
      {sa_json(pem, R"({"private_key": null})"), "private_key"},
      {sa_json(pem, R"({"private_key": "TUlJRXZRSUJBREFOQmdrcWhr"})"), "private_key"},
      {sa_json(pem, R"({"private_key_id": 12})"), "private_key_id"},
      {sa_json(pem, R"({"token_uri": ["x"]})"), "token_uri"},
  };
  for (const auto& c : cases) {
    auto e = catch_error([&] { remote::gcp::parse_service_account_key(c.text, "g", "the key file \"/sa.json\""); });
    ASSERT_TRUE(e) << c.text;
    EXPECT_STREQ(e->sqlstate(), "F0000");
    EXPECT_TRUE(error_mentions(*e, c.needle)) << c.needle << " / " << e->detail();
    EXPECT_TRUE(error_mentions(*e, "/sa.json"));
    EXPECT_FALSE(error_mentions(*e, "TUlJRXZRSUJBREFOQmdrcWhr")) << e->detail();
  }
}

// ---------------------------------------------------------------- token responses

HttpResult response(long status, const std::string& body, HttpFailure failure = HttpFailure::kNone) {
  HttpResult r;
  r.response.status = status;
  r.response.body = SecretString(body);
  r.failure = failure;
  r.attempts = 1;
  if (failure != HttpFailure::kNone) r.failure_text = "connection refused";
  return r;
}

remote::TokenResponse parse(long status, const std::string& body, std::initializer_list<std::string_view> withhold = {}) {
  return remote::parse_token_response(response(status, body), "g", "The token endpoint https://t", withhold);
}

TEST(TokenResponse, ReadsGoogleAndAzureShapes) {
  auto g = parse(200, R"({"access_token":"ya29.c.abc","expires_in":3599,"token_type":"Bearer"})");
  EXPECT_EQ(g.access_token.view(), "ya29.c.abc");
  EXPECT_EQ(g.expires_in, 3599);
  auto a = parse(200, R"({"token_type":"Bearer","expires_in":"3600","ext_expires_in":3600,"access_token":"eyJ0.x.y"})");
  EXPECT_EQ(a.access_token.view(), "eyJ0.x.y");
  EXPECT_EQ(a.expires_in, 3600);
  EXPECT_EQ(parse(200, R"({"access_token":"t"})").expires_in, -1);
  EXPECT_EQ(parse(200, R"({"access_token":"t","expires_in":-5})").expires_in, -1);
  EXPECT_EQ(parse(200, R"({"access_token":"t","token_type":"bearer"})").access_token.view(), "t");
}

TEST(TokenResponse, RefusalsAre28000WithTheServicesCode) {
  auto e = catch_error([] {
    parse(400, R"({"error":"invalid_grant","error_description":"Invalid JWT Signature."})");
  });
  ASSERT_TRUE(e);
  EXPECT_STREQ(e->sqlstate(), "28000");
  EXPECT_STREQ(e->what(), "KMS \"g\" token request failed: HTTP 400 invalid_grant");
  EXPECT_EQ(e->detail(), "The token endpoint https://t refused to issue a token: Invalid JWT Signature.");
  // Azure's description, control characters and all, made safe.
  expect_error("28000", [] {
    parse(401, R"({"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1","error_codes":[7000215]})");
  }, "AADSTS7000215");
  // A description that quotes the credential sent is withheld.
  auto w = catch_error([] {
    parse(401, R"({"error":"invalid_client","error_description":"bad secret Qx8~s3cr3t-value"})", {"Qx8~s3cr3t-value"});
  });
  ASSERT_TRUE(w);
  EXPECT_FALSE(error_mentions(*w, "s3cr3t"));
  EXPECT_TRUE(error_mentions(*w, "withheld"));
  // An odd error code is left out rather than shown.
  auto odd = catch_error([] { parse(400, R"({"error":"bad code with spaces"})"); });
  ASSERT_TRUE(odd);
  EXPECT_STREQ(odd->what(), "KMS \"g\" token request failed: HTTP 400");
  expect_error("58000", [] { parse(503, "{}"); });
  expect_error("58000", [] { parse(429, R"({"error":"rate_limited"})"); });
  expect_error("58000", [] {
    remote::parse_token_response(response(0, "", HttpFailure::kConnect), "g", "w");
  });
}

TEST(TokenResponse, MalformedSuccessIs28000) {
  for (const char* body : {"", "[]", "{}", R"({"access_token":""})", R"({"access_token":7})",
                           R"({"access_token":"with space"})", R"({"access_token":"a\nb"})",
                           R"({"access_token":"t","token_type":"mac"})", R"({"access_token":"t","token_type":1})"})
    expect_error("28000", [&] { parse(200, body); }, "malformed response");
}

TEST(TokenResponse, FormEncoding) {
  SecretString body;
  remote::form_append(body, "grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer");
  remote::form_append(body, "client_secret", "a+b/c=d&e f~_.-");
  EXPECT_EQ(body.view(),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&client_secret=a%2Bb%2Fc%3Dd%26e%20f~_.-");
}

// ---------------------------------------------------------------- caching

class FakeGrant final : public remote::CachedGrantSource {
 public:
  FakeGrant(std::int64_t* now, long lifetime) : CachedGrantSource("g", [now] { return *now; }), lifetime_(lifetime) {}
  std::string describe() const override { return "the fake grant"; }
  int sent = 0;

 protected:
  remote::TokenResponse request_token(const KmsContext&) override {
    ++sent;
    remote::TokenResponse r;
    r.access_token = SecretString("token-" + std::to_string(sent));
    r.expires_in = lifetime_;
    return r;
  }

 private:
  long lifetime_;
};

TEST(GrantCache, KeepsTheTokenUntilShortlyBeforeExpiry) {
  std::int64_t now = 1000000;
  FakeGrant g(&now, 3600);
  KmsContext ctx;
  auto c = g.get(ctx);
  EXPECT_EQ(c.token.view(), "token-1");
  EXPECT_TRUE(c.fresh);
  EXPECT_EQ(c.expires_ms, now + 3600 * 1000);
  now += 3539 * 1000;  // a minute and a second before expiry: still cached
  c = g.get(ctx);
  EXPECT_EQ(c.token.view(), "token-1");
  EXPECT_FALSE(c.fresh);
  now += 1000;  // a minute before: a new one
  EXPECT_EQ(g.get(ctx).token.view(), "token-2");
  EXPECT_EQ(g.requests(), 2);
  EXPECT_TRUE(g.invalidate());
  EXPECT_EQ(g.get(ctx).token.view(), "token-3");
}

TEST(GrantCache, ShortLifetimesAndNone) {
  std::int64_t now = 0;
  FakeGrant shortlived(&now, 4);  // cached for half its life: 2 s
  KmsContext ctx;
  shortlived.get(ctx);
  now = 1999;
  EXPECT_EQ(shortlived.get(ctx).token.view(), "token-1");
  now = 2000;
  EXPECT_EQ(shortlived.get(ctx).token.view(), "token-2");
  FakeGrant none(&now, -1);  // no lifetime: one call only
  none.get(ctx);
  EXPECT_EQ(none.get(ctx).token.view(), "token-2");
}

// ---------------------------------------------------------------- BearerToken's order

class CountingSource final : public remote::OAuthTokenSource {
 public:
  explicit CountingSource(std::string token) : token_(std::move(token)) {}
  remote::OAuthCredential get(const KmsContext&) override {
    ++gets;
    remote::OAuthCredential c;
    c.token = SecretString(token_);
    c.fresh = gets == 1;
    return c;
  }
  bool invalidate() override { return true; }
  std::string describe() const override { return "source " + token_; }
  int gets = 0;

 private:
  std::string token_;
};

KmsContext env_with(const char* name, const char* value) {
  KmsContext c;
  c.getenv = [name, value](const char* n) -> const char* { return std::string(n) == name ? value : nullptr; };
  return c;
}

TEST(BearerTokenOrder, OptionGrantThenEnvTokenThenEnvGrantThenMetadata) {
  int factory_calls = 0;
  auto factory = [&factory_calls](const KmsContext&) -> std::unique_ptr<remote::OAuthTokenSource> {
    ++factory_calls;
    return std::make_unique<CountingSource>("from-env-grant");
  };
  remote::MetadataTokenSource md{"metadata_url", "http://127.0.0.1:9/token", "Metadata-Flavor: Google"};
  // An option grant comes before the environment's token.
  remote::BearerToken with_grant("g", "", "GOOGLE_OAUTH_ACCESS_TOKEN", std::make_unique<CountingSource>("from-option"),
                                 factory, "GOOGLE_APPLICATION_CREDENTIALS", md);
  EXPECT_EQ(with_grant.get(env_with("GOOGLE_OAUTH_ACCESS_TOKEN", "env-token")).view(), "from-option");
  EXPECT_EQ(with_grant.describe(), "source from-option");
  // A fresh grant token is not invalidated by a 401 (another would not help); a cached one is.
  EXPECT_FALSE(with_grant.invalidate());
  with_grant.get(KmsContext{});
  EXPECT_TRUE(with_grant.invalidate());
  // Without it: the environment's token, and the factory is not even asked.
  remote::BearerToken env_first("g", "", "GOOGLE_OAUTH_ACCESS_TOKEN", nullptr, factory, "GOOGLE_APPLICATION_CREDENTIALS", md);
  EXPECT_EQ(env_first.get(env_with("GOOGLE_OAUTH_ACCESS_TOKEN", "env-token")).view(), "env-token");
  EXPECT_EQ(factory_calls, 0);
  // Then the environment's grant (built once), before the metadata service.
  EXPECT_EQ(env_first.get(env_with("X", "y")).view(), "from-env-grant");
  EXPECT_EQ(env_first.get(env_with("X", "y")).view(), "from-env-grant");
  EXPECT_EQ(factory_calls, 1);
  EXPECT_EQ(env_first.describe(), "source from-env-grant");
  // Nothing configured: 28000 naming every source.
  remote::BearerToken none("g", "", "GOOGLE_OAUTH_ACCESS_TOKEN", nullptr,
                           [](const KmsContext&) { return std::unique_ptr<remote::OAuthTokenSource>(); },
                           "GOOGLE_APPLICATION_CREDENTIALS", remote::MetadataTokenSource{"metadata_url", "", ""});
  expect_error("28000", [&] { none.get(env_with("X", "y")); }, "GOOGLE_APPLICATION_CREDENTIALS");
}

// ---------------------------------------------------------------- provider options

KmsContext ctx_env(std::map<std::string, std::string> env = {}) {
  KmsContext c;
  auto shared = std::make_shared<std::map<std::string, std::string>>(std::move(env));
  c.getenv = [shared](const char* n) -> const char* {
    auto it = shared->find(n);
    return it == shared->end() ? nullptr : it->second.c_str();
  };
  c.http.max_attempts = 1;
  c.http.connect_timeout_ms = 500;
  c.http.attempt_timeout_ms = 1000;
  c.http.total_budget_ms = 1000;
  return c;
}

std::unique_ptr<KmsProvider> gcp(const std::string& extra, const KmsContext& c = ctx_env()) {
  return make_kms_provider(
      KmsConfig{"g", "gcp-kms", R"({"endpoint": "http://127.0.0.1:9")" + (extra.empty() ? "" : ", " + extra) + "}"}, c);
}

std::unique_ptr<KmsProvider> azure(const std::string& extra, const KmsContext& c = ctx_env()) {
  return make_kms_provider(
      KmsConfig{"a", "azure-keyvault", R"({"vault_url": "http://127.0.0.1:9")" + (extra.empty() ? "" : ", " + extra) + "}"},
      c);
}

constexpr const char* kKek = "projects/p/locations/global/keyRings/r/cryptoKeys/k";
const DekBinding kBinding{"k", 1, 1};
const std::uint8_t kDekBytes[32] = {};
const ByteView kDek(kDekBytes, 32);

TEST(CloudCredentialOptions, GcpOptions) {
  EXPECT_NO_THROW(gcp(R"("credentials_file": "/etc/sa.json")"));
  EXPECT_NO_THROW(gcp(R"("credentials_file": "/etc/sa.json", "token_url": "https://oauth2.googleapis.com/token")"));
  expect_error("22023", [] { gcp(R"("credentials_file": "/s", "token_file": "/t")"); }, "two credential sources");
  expect_error("22023", [] { gcp(R"("credentials_file": "/s", "token_url": "http://oauth.example.com/token")"); },
               "the option \"token_url\" is \"http://oauth.example.com/token\"");
  expect_error("22023", [] { gcp(R"("credentials_file": 5)"); }, "credentials_file");
  expect_error("22023", [] { gcp(R"("credential_file": "/s")"); }, "unknown option");
}

TEST(CloudCredentialOptions, GcpKeyFileBeforeAnyRequest) {
  // World-readable: refused before the token request (port 9 would refuse anyway).
  Pkey k{new_rsa()};
  TempFile open_file(sa_json(to_pem(k.p)), 0644);
  auto p = gcp(R"("credentials_file": ")" + open_file.path() + "\"");
  expect_error("F0000", [&] { p->wrap(kKek, kBinding, kDek); }, "other users");
  // GOOGLE_APPLICATION_CREDENTIALS naming another type of credentials.
  TempFile user(R"({"type": "authorized_user", "client_id": "c", "client_secret": "s", "refresh_token": "r"})", 0600);
  auto q = gcp("", ctx_env({{"GOOGLE_APPLICATION_CREDENTIALS", user.path()}}));
  expect_error("F0000", [&] { q->wrap(kKek, kBinding, kDek); }, "authorized_user");
  // A good key goes to the token endpoint (nothing listens: 58000, not an auth error).
  TempFile good(sa_json(to_pem(k.p), R"({"token_uri": "http://127.0.0.1:9/token"})"), 0600);
  auto r = gcp("", ctx_env({{"GOOGLE_APPLICATION_CREDENTIALS", good.path()}}));
  expect_error("58000", [&] { r->wrap(kKek, kBinding, kDek); }, "token request");
  // ... unless the token URL is not one pg_envelope may send the assertion to.
  TempFile far(sa_json(to_pem(k.p), R"({"token_uri": "http://oauth.example.com/token"})"), 0600);
  auto s = gcp(R"("credentials_file": ")" + far.path() + "\"");
  expect_error("22023", [&] { s->wrap(kKek, kBinding, kDek); }, "the token_uri of the service-account key file");
}

TEST(CloudCredentialOptions, AzureOptions) {
  const std::string ids = R"("tenant_id": "contoso.onmicrosoft.com", "client_id": "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b")";
  EXPECT_NO_THROW(azure(ids + R"(, "client_secret_file": "/s")"));
  EXPECT_NO_THROW(azure(ids + R"(, "client_certificate_file": "/c", "authority_url": "https://login.microsoftonline.us")"));
  EXPECT_NO_THROW(azure(ids + R"(, "federated_token_file": "/f")"));
  EXPECT_NO_THROW(azure(ids));  // ids alone serve the environment's sources
  expect_error("22023", [&] { azure(ids + R"(, "client_secret_file": "/s", "federated_token_file": "/f")"); },
               "two credential sources");
  expect_error("22023", [&] { azure(ids + R"(, "token_file": "/t", "client_certificate_file": "/c")"); },
               "two credential sources");
  expect_error("22023", [] { azure(R"("client_secret_file": "/s", "client_id": "c")"); }, "tenant_id");
  expect_error("22023", [] { azure(R"("client_secret_file": "/s", "tenant_id": "t")"); }, "client_id");
  expect_error("22023", [&] { azure(R"("tenant_id": "a/b", "client_id": "c", "client_secret_file": "/s")"); },
               "tenant_id");
  expect_error("22023", [&] { azure(ids + R"(, "authority_url": "http://login.example.com")"); });
  expect_error("22023", [&] { azure(ids + R"(, "authority_url": "https://login.example.com?x=1")"); }, "authority_url");
  expect_error("22023", [] { azure(R"("client_secret": "s")"); }, "looks like a secret");
  // The ids may come from the environment.
  EXPECT_NO_THROW(azure(R"("client_secret_file": "/s")", ctx_env({{"AZURE_TENANT_ID", "t"}, {"AZURE_CLIENT_ID", "c"}})));
}

TEST(CloudCredentialOptions, AzureSourcesBeforeAnyRequest) {
  const std::string ids = R"("tenant_id": "t", "client_id": "c", "authority_url": "http://127.0.0.1:9")";
  TempFile open_secret("s3cret", 0604);
  auto p = azure(ids + R"(, "client_secret_file": ")" + open_secret.path() + "\"");
  expect_error("F0000", [&] { p->wrap("key", kBinding, kDek); }, "other users");
  // A certificate file without a certificate.
  Pkey k{new_rsa()};
  TempFile key_only(to_pem(k.p), 0600);
  auto q = azure(ids + R"(, "client_certificate_file": ")" + key_only.path() + "\"");
  expect_error("F0000", [&] { q->wrap("key", kBinding, kDek); }, "no PEM certificate");
  // The environment: AZURE_CLIENT_SECRET goes to the token endpoint (58000: nothing listens).
  auto r = azure(R"("authority_url": "http://127.0.0.1:9")",
                 ctx_env({{"AZURE_TENANT_ID", "t"}, {"AZURE_CLIENT_ID", "c"}, {"AZURE_CLIENT_SECRET", "s"}}));
  expect_error("58000", [&] { r->wrap("key", kBinding, kDek); }, "token request");
  // AZURE_AUTHORITY_HOST (as AKS sets it, with a trailing slash) when there is no option.
  auto h = azure("", ctx_env({{"AZURE_TENANT_ID", "t"}, {"AZURE_CLIENT_ID", "c"}, {"AZURE_CLIENT_SECRET", "s"},
                              {"AZURE_AUTHORITY_HOST", "http://127.0.0.1:9/"}}));
  expect_error("58000", [&] { h->wrap("key", kBinding, kDek); }, "http://127.0.0.1:9/t/oauth2/v2.0/token");
  expect_error("22023", [] { azure("", ctx_env({{"AZURE_AUTHORITY_HOST", "http://login.example.com"}})); },
               "AZURE_AUTHORITY_HOST");
  // Without AZURE_CLIENT_ID the environment configures nothing: no token at all.
  auto s = azure(R"("authority_url": "http://127.0.0.1:9")",
                 ctx_env({{"AZURE_TENANT_ID", "t"}, {"AZURE_FEDERATED_TOKEN_FILE", "/f"}}));
  expect_error("28000", [&] { s->wrap("key", kBinding, kDek); }, "AZURE_FEDERATED_TOKEN_FILE");
}

}  // namespace
}  // namespace pg_envelope
