// The pure response handling of the remote providers (src/kms/kms_responses.hpp) and
// of metadata token requests (src/kms/bearer_token.hpp): for each provider, which
// SQLSTATE each kind of refusal gets (the same kind gets the same SQLSTATE
// everywhere: docs/kms.md, "Errors"), retry verdicts, and the fields read from
// successful responses. No network.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "kms/bearer_token.hpp"
#include "kms/kms_messages.hpp"
#include "kms/kms_responses.hpp"
#include "kms/remote_kms.hpp"
#include "kms/secret_file.hpp"
#include "kms/url.hpp"
#include "pg_envelope/encoding.hpp"
#include "pg_envelope/crc32c.hpp"
#include "pg_envelope/crypto.hpp"
#include "pg_envelope/error.hpp"
#include "test_support.hpp"

namespace pg_envelope::remote {
namespace {

using test::catch_error;
using test::error_mentions;

constexpr const char* kAuth = "28000";
constexpr const char* kPermission = "42501";
constexpr const char* kNotFound = "42704";
constexpr const char* kDisabled = "55000";
constexpr const char* kInvalid = "22000";
constexpr const char* kBadRequest = "22023";
constexpr const char* kUnavailable = "58000";

std::string text_of(const json& j) {
  auto t = j.dump();
  return std::string(t.data(), t.size());
}

HttpResult response(long status, const std::string& body) {
  HttpResult r;
  r.response.status = status;
  r.response.body = SecretString(body);
  r.attempts = 1;
  return r;
}

// The SQLSTATE `fn` throws, with its message checked for `needle`.
std::string state_of(const std::function<void()>& fn, const std::string& needle = "") {
  auto e = catch_error(fn);
  if (!e) return "no error";
  if (!needle.empty()) {
    EXPECT_TRUE(error_mentions(*e, needle)) << e->what() << " / " << e->detail();
  }
  return e->sqlstate();
}

// ---------------------------------------------------------------- Vault

vault::Site vault_site(const char* op = "encrypt") { return {"v", op, "pg-envelope", "https://vault:8200", "transit"}; }

std::string vault_state(long status, const std::string& body, const char* op = "encrypt") {
  return state_of([&] { vault::result(response(status, body), vault_site(op)); }, "KMS \"v\" " + std::string(op) + " failed");
}

TEST(VaultResponses, Mapping) {
  // Real Vault answers a bad, expired or revoked token with 403 and "invalid token"
  // next to "permission denied"; a policy refusal says "permission denied" alone.
  EXPECT_EQ(vault_state(403, R"({"errors":["2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"]})"), kAuth);
  EXPECT_EQ(vault_state(403, R"({"errors":["permission denied","invalid token"]})"), kAuth);
  EXPECT_EQ(vault_state(401, R"({"errors":[]})"), kAuth);
  EXPECT_EQ(vault_state(403, R"({"errors":["1 error occurred:\n\t* permission denied\n\n"]})"), kPermission);
  EXPECT_EQ(vault_state(403, R"({"errors":["permission denied"]})"), kPermission);
  EXPECT_EQ(vault_state(403, "not json"), kPermission);
  EXPECT_EQ(vault_state(400, R"({"errors":["encryption key not found"]})"), kNotFound);
  EXPECT_EQ(vault_state(400, R"({"errors":["cipher: message authentication failed"]})", "decrypt"), kInvalid);
  EXPECT_EQ(vault_state(400, R"({"errors":["invalid ciphertext: no prefix"]})", "decrypt"), kInvalid);
  EXPECT_EQ(vault_state(400, R"j({"errors":["ciphertext or signature version is disallowed by policy (too old)"]})j",
                        "decrypt"),
            kDisabled);
  EXPECT_EQ(vault_state(400, R"({"errors":["failed to parse JSON input"]})"), kBadRequest);
  EXPECT_EQ(vault_state(404, R"({"errors":["no handler for route"]})"), kBadRequest);
  EXPECT_EQ(vault_state(429, R"({"errors":["rate limit quota exceeded"]})"), kUnavailable);
  EXPECT_EQ(vault_state(503, R"({"errors":["Vault is sealed"]})"), kUnavailable);
}

TEST(VaultResponses, MessageAndVerdicts) {
  auto e = catch_error([] { vault::result(response(403, R"({"errors":["permission denied"]})"), vault_site()); });
  ASSERT_TRUE(e);
  EXPECT_STREQ(e->what(), "KMS \"v\" encrypt failed: HTTP 403 permission denied");
  EXPECT_TRUE(error_mentions(*e, "mount \"transit\""));
  HttpResponse r;
  for (long s : {429L, 500L, 502L, 503L, 504L}) {
    r.status = s;
    EXPECT_EQ(vault::judge(r), Verdict::kRetry) << s;
  }
  for (long s : {400L, 401L, 403L, 404L, 501L}) {
    r.status = s;
    EXPECT_EQ(vault::judge(r), Verdict::kFail) << s;
  }
  r.status = 200;
  EXPECT_EQ(vault::judge(r), Verdict::kSuccess);
}

// Vault's message goes into the error: one line, valid UTF-8, at most 200 bytes.
TEST(VaultResponses, ErrorText) {
  EXPECT_EQ(vault::error_text("permission denied"), "permission denied");
  EXPECT_EQ(vault::error_text("2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"),
            "2 errors occurred: * permission denied * invalid token");
  EXPECT_EQ(vault::error_text(" \x01" "a\x7f" " b "), "a b");
  EXPECT_EQ(vault::error_text(std::string(300, 'x')), std::string(200, 'x'));
  // 199 ASCII bytes and a 2-byte character: the character does not fit and is left out
  // whole, instead of being cut into invalid UTF-8 (as the former 200-byte cut did).
  EXPECT_EQ(vault::error_text(std::string(199, 'x') + "\xc3\xa9yz"), std::string(199, 'x'));
  EXPECT_EQ(vault::error_text(std::string(198, 'x') + "\xc3\xa9yz"), std::string(198, 'x') + "\xc3\xa9");
  auto e = catch_error([] {
    vault::result(response(403, R"({"errors":["1 error occurred:\n\t* permission denied\n\n"]})"), vault_site());
  });
  ASSERT_TRUE(e);
  EXPECT_STREQ(e->what(), "KMS \"v\" encrypt failed: HTTP 403 1 error occurred: * permission denied");
}

TEST(VaultResponses, SuccessFields) {
  json out = vault::result(response(200, R"({"data":{"ciphertext":"vault:v1:abc","key_version":1}})"), vault_site());
  Bytes c = vault::ciphertext(out, "v", "encrypt");
  EXPECT_EQ(std::string(c.begin(), c.end()), "vault:v1:abc");
  EXPECT_EQ(state_of([] { vault::ciphertext(json::parse(R"({"data":{"ciphertext":"abc"}})"), "v", "encrypt"); }),
            kBadRequest);
  EXPECT_EQ(state_of([] { vault::ciphertext(json::parse("[]"), "v", "rewrap"); }, "rewrap failed: malformed"),
            kBadRequest);
  SecureBytes p = vault::plaintext(json::parse(R"({"data":{"plaintext":"Zm9v"}})"), "v");
  EXPECT_EQ(std::string(p.data(), p.data() + p.size()), "foo");
  EXPECT_EQ(state_of([] { vault::plaintext(json::parse(R"({"data":{"plaintext":"Zm9"}})"), "v"); }), kBadRequest);
  EXPECT_EQ(state_of([] { vault::plaintext(json::parse(R"({"data":{}})"), "v"); }), kBadRequest);
}

// ---------------------------------------------------------------- AWS

aws::Site aws_site(const char* op = "Encrypt") { return {"a", op, "alias/k", "us-east-1", "https://kms", "the server's environment (AWS_ACCESS_KEY_ID)"}; }

std::string aws_state(long status, const std::string& body, const char* op = "Encrypt") {
  return state_of([&] { aws::result(response(status, body), aws_site(op)); }, "KMS \"a\" " + std::string(op) + " failed");
}

std::string aws_type(const std::string& type) { return R"({"__type":")" + type + R"(","message":"m"})"; }

TEST(AwsResponses, Mapping) {
  for (const char* t : {"UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException",
                        "IncompleteSignature", "IncompleteSignatureException", "InvalidClientTokenId",
                        "MissingAuthenticationToken", "MissingAuthenticationTokenException", "SignatureDoesNotMatch",
                        "RequestExpired"})
    EXPECT_EQ(aws_state(400, aws_type(t)), kAuth) << t;
  EXPECT_EQ(aws_state(403, aws_type("MissingAuthenticationTokenException")), kAuth);
  for (const char* t : {"AccessDeniedException", "com.amazonaws.kms#AccessDeniedException", "NotAuthorized"})
    EXPECT_EQ(aws_state(400, aws_type(t)), kPermission) << t;
  EXPECT_EQ(aws_state(400, aws_type("NotFoundException")), kNotFound);
  for (const char* t : {"DisabledException", "KMSInvalidStateException", "KeyUnavailableException"})
    EXPECT_EQ(aws_state(400, aws_type(t), "Decrypt"), kDisabled) << t;
  for (const char* t : {"InvalidCiphertextException", "IncorrectKeyException"})
    EXPECT_EQ(aws_state(400, aws_type(t), "Decrypt"), kInvalid) << t;
  for (const char* t : {"ThrottlingException", "KMSInternalException", "DependencyTimeoutException",
                        "LimitExceededException"})
    EXPECT_EQ(aws_state(400, aws_type(t)), kUnavailable) << t;
  EXPECT_EQ(aws_state(503, aws_type("ServiceUnavailableException")), kUnavailable);
  EXPECT_EQ(aws_state(400, aws_type("ValidationException")), kBadRequest);
  EXPECT_EQ(aws_state(400, "{}"), kBadRequest);
  // Without a type (or with one that is not ours to interpret) the status decides.
  EXPECT_EQ(aws_state(401, ""), kAuth);
  EXPECT_EQ(aws_state(403, "<html>Forbidden</html>"), kPermission);
  EXPECT_EQ(aws_state(403, aws_type("bad type!")), kPermission);
  EXPECT_EQ(aws_state(502, ""), kUnavailable);
  EXPECT_EQ(aws_state(200, "not json"), kBadRequest);
}

TEST(AwsResponses, ErrorTypeAndVerdicts) {
  HttpResponse r;
  r.status = 400;
  r.body = SecretString(aws_type("com.amazon.coral.service#ThrottlingException"));
  EXPECT_EQ(aws::error_type(r), "ThrottlingException");
  EXPECT_EQ(aws::judge(r), Verdict::kRetry);
  r.body = SecretString(R"({"__type":"Bad Type"})");
  EXPECT_EQ(aws::error_type(r), "invalid error type");
  EXPECT_EQ(aws::judge(r), Verdict::kFail);
  r.body = SecretString(R"({"__type":7})");
  EXPECT_EQ(aws::error_type(r), "");
  r.status = 500;
  EXPECT_EQ(aws::judge(r), Verdict::kRetry);
  r.status = 200;
  EXPECT_EQ(aws::judge(r), Verdict::kSuccess);
  auto e = catch_error([] { aws::result(response(400, aws_type("InvalidSignatureException")), aws_site()); });
  ASSERT_TRUE(e);
  EXPECT_STREQ(e->what(), "KMS \"a\" Encrypt failed: InvalidSignatureException");
  EXPECT_TRUE(error_mentions(*e, "HTTP 400, 1 attempt(s)"));
}

TEST(AwsResponses, SuccessFields) {
  json out = aws::result(response(200, R"({"CiphertextBlob":"AQID","KeyId":"arn"})"), aws_site());
  EXPECT_EQ(aws::ciphertext_blob(out, "a", "Encrypt"), (Bytes{1, 2, 3}));
  EXPECT_EQ(state_of([] { aws::ciphertext_blob(json::parse(R"({"CiphertextBlob":""})"), "a", "Encrypt"); }),
            kBadRequest);
  SecureBytes p = aws::plaintext(json::parse(R"({"Plaintext":"AQID"})"), "a");
  EXPECT_EQ(Bytes(p.data(), p.data() + p.size()), (Bytes{1, 2, 3}));
  EXPECT_EQ(state_of([] { aws::plaintext(json::parse(R"({"Plaintext":"AQI"})"), "a"); }), kBadRequest);
}

// ---------------------------------------------------------------- GCP

const char* kGcpKek = "projects/p/locations/global/keyRings/r/cryptoKeys/k";

gcp::Site gcp_site(const char* op = "encrypt") { return {"g", op, kGcpKek, "https://kms", "the token file \"/t\""}; }

std::string google(long code, const char* status, const char* message = "m") {
  return text_of(json{{"error", {{"code", code}, {"message", message}, {"status", status}}}});
}

std::string gcp_state(long status, const std::string& body, const char* op = "encrypt") {
  return state_of([&] { gcp::result(response(status, body), gcp_site(op)); }, "KMS \"g\" " + std::string(op) + " failed");
}

TEST(GcpResponses, Mapping) {
  EXPECT_EQ(gcp_state(401, google(401, "UNAUTHENTICATED")), kAuth);
  EXPECT_EQ(gcp_state(401, ""), kAuth);
  EXPECT_EQ(gcp_state(403, google(403, "PERMISSION_DENIED")), kPermission);
  EXPECT_EQ(gcp_state(401, google(401, "PERMISSION_DENIED")), kPermission);  // the status name decides
  EXPECT_EQ(gcp_state(403, ""), kPermission);
  EXPECT_EQ(gcp_state(404, google(404, "NOT_FOUND")), kNotFound);
  EXPECT_EQ(gcp_state(404, "<html>"), kNotFound);
  EXPECT_EQ(gcp_state(400, google(400, "FAILED_PRECONDITION"), "decrypt"), kDisabled);
  for (const char* s : {"RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED"})
    EXPECT_EQ(gcp_state(400, google(400, s)), kUnavailable) << s;
  EXPECT_EQ(gcp_state(429, ""), kUnavailable);
  EXPECT_EQ(gcp_state(500, google(500, "UNKNOWN")), kUnavailable);
  EXPECT_EQ(gcp_state(400, google(400, "INVALID_ARGUMENT"), "decrypt"), kInvalid);
  EXPECT_EQ(gcp_state(400, google(400, "INVALID_ARGUMENT"), "encrypt"), kBadRequest);
  EXPECT_EQ(state_of([] {
              gcp::result(response(400, google(400, "INVALID_ARGUMENT", "The checksum in field x did not match")),
                          gcp_site("decrypt"));
            }, "integrity check failed"),
            kUnavailable);
  EXPECT_EQ(gcp_state(501, google(501, "UNIMPLEMENTED")), kUnavailable);
  EXPECT_EQ(gcp_state(409, google(409, "ABORTED")), kBadRequest);
  // The token's source is named when the token was refused.
  auto e = catch_error([] { gcp::result(response(401, google(401, "UNAUTHENTICATED")), gcp_site()); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(error_mentions(*e, "the token file \"/t\""));
}

TEST(GcpResponses, QuotedInputNeverReachesTheMessage) {
  auto e = catch_error([] {
    gcp::result(response(400, google(400, "INVALID_ARGUMENT", "Bad plaintext \"c2VjcmV0\"")), gcp_site("decrypt"));
  });
  ASSERT_TRUE(e);
  EXPECT_FALSE(error_mentions(*e, "c2VjcmV0"));
}

TEST(GcpResponses, EncryptIntegrity) {
  Bytes ct{9, 8, 7, 6};
  auto ok = [&] {
    return json{{"name", std::string(kGcpKek) + "/cryptoKeyVersions/1"},
                {"ciphertext", base64_encode(ct)},
                {"ciphertextCrc32c", std::to_string(crc32c(ct))},
                {"verifiedPlaintextCrc32c", true},
                {"verifiedAdditionalAuthenticatedDataCrc32c", true}};
  };
  EXPECT_EQ(gcp::encrypt_ciphertext(ok(), gcp_site()), ct);
  json other_project = ok();
  other_project["name"] = "projects/123/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/3";
  EXPECT_EQ(gcp::encrypt_ciphertext(other_project, gcp_site()), ct);
  json other_key = ok();
  other_key["name"] = "projects/p/locations/global/keyRings/r/cryptoKeys/k2/cryptoKeyVersions/1";
  EXPECT_EQ(state_of([&] { gcp::encrypt_ciphertext(other_key, gcp_site()); }, "integrity"), kUnavailable);
  json unverified = ok();
  unverified["verifiedPlaintextCrc32c"] = false;
  EXPECT_EQ(state_of([&] { gcp::encrypt_ciphertext(unverified, gcp_site()); }, "integrity"), kUnavailable);
  json bad_crc = ok();
  bad_crc["ciphertextCrc32c"] = "1";
  EXPECT_EQ(state_of([&] { gcp::encrypt_ciphertext(bad_crc, gcp_site()); }, "integrity"), kUnavailable);
  json numeric_crc = ok();
  numeric_crc["ciphertextCrc32c"] = crc32c(ct);
  EXPECT_EQ(gcp::encrypt_ciphertext(numeric_crc, gcp_site()), ct);
  json no_ct = ok();
  no_ct.erase("ciphertext");
  EXPECT_EQ(state_of([&] { gcp::encrypt_ciphertext(no_ct, gcp_site()); }, "malformed"), kBadRequest);
}

TEST(GcpResponses, DecryptIntegrity) {
  Bytes pt{1, 2, 3};
  json ok{{"plaintext", base64_encode(pt)}, {"plaintextCrc32c", std::to_string(crc32c(pt))}};
  SecureBytes p = gcp::decrypt_plaintext(ok, gcp_site("decrypt"));
  EXPECT_EQ(Bytes(p.data(), p.data() + p.size()), pt);
  json bad = ok;
  bad["plaintextCrc32c"] = "99999999999";
  EXPECT_EQ(state_of([&] { gcp::decrypt_plaintext(bad, gcp_site("decrypt")); }, "integrity"), kUnavailable);
  json missing = ok;
  missing.erase("plaintextCrc32c");
  EXPECT_EQ(state_of([&] { gcp::decrypt_plaintext(missing, gcp_site("decrypt")); }, "integrity"), kUnavailable);
}

// ---------------------------------------------------------------- Azure

UrlParts vault_url_parts() {
  UrlParts p;
  EXPECT_TRUE(parse_url("https://myvault.vault.azure.net", p));
  return p;
}

azure::Site azure_site(const char* op = "wrapkey") {
  return {"z", op, "key", "/keys/key", "https://myvault.vault.azure.net", "the server's AZURE_ACCESS_TOKEN"};
}

std::string kv_error(const char* code, const char* message, const char* inner = nullptr) {
  json err{{"code", code}, {"message", message}};
  if (inner) err["innererror"] = {{"code", inner}};
  return text_of(json{{"error", err}});
}

std::string azure_state(long status, const std::string& body, const char* op = "wrapkey") {
  return state_of([&] { azure::result(response(status, body), azure_site(op)); }, "KMS \"z\" " + std::string(op) + " failed");
}

TEST(AzureResponses, Mapping) {
  EXPECT_EQ(azure_state(401, kv_error("Unauthorized", "AKV10032: Invalid issuer or token expired.")), kAuth);
  EXPECT_EQ(azure_state(401, ""), kAuth);
  EXPECT_EQ(azure_state(400, kv_error("Unauthorized", "x")), kAuth);
  EXPECT_EQ(azure_state(403, kv_error("Forbidden", "Caller is not authorized", "ForbiddenByRbac")), kPermission);
  EXPECT_EQ(azure_state(403, kv_error("Forbidden", "Caller is not authorized", "ForbiddenByPolicy")), kPermission);
  EXPECT_EQ(azure_state(403, ""), kPermission);
  EXPECT_EQ(azure_state(403, kv_error("Forbidden", "Operation unwrapKey is not allowed on a disabled key.",
                                      "KeyDisabled"), "unwrapkey"),
            kDisabled);
  EXPECT_EQ(azure_state(403, kv_error("Forbidden", "Operation is not allowed on a disabled key.")), kDisabled);
  EXPECT_EQ(azure_state(404, kv_error("KeyNotFound", "A key with (name/id) key was not found")), kNotFound);
  EXPECT_EQ(azure_state(400, kv_error("BadParameter", "x"), "unwrapkey"), kInvalid);
  EXPECT_EQ(azure_state(400, kv_error("BadParameter", "x"), "wrapkey"), kBadRequest);
  EXPECT_EQ(azure_state(429, kv_error("Throttled", "x")), kUnavailable);
  EXPECT_EQ(azure_state(503, kv_error("ServiceUnavailable", "x")), kUnavailable);
  auto e = catch_error([] { azure::result(response(401, kv_error("Unauthorized", "x")), azure_site()); });
  ASSERT_TRUE(e);
  EXPECT_STREQ(e->what(), "KMS \"z\" wrapkey failed: Unauthorized");
  EXPECT_TRUE(error_mentions(*e, "AZURE_ACCESS_TOKEN"));
}

TEST(AzureResponses, WrapkeyStoredForm) {
  UrlParts vault = vault_url_parts();
  azure::KeyRef ref{"key", ""};
  std::string value = std::string(base64url_encode(as_bytes("wrapped")).view());
  json out{{"kid", "https://myvault.vault.azure.net/keys/key/0123abcd"}, {"value", value}};
  Bytes stored = azure::wrapkey_stored(out, azure_site(), ref, vault, "RSA-OAEP-256");
  std::string text(stored.begin(), stored.end());
  EXPECT_EQ(text, R"({"alg":"RSA-OAEP-256","kid":"https://myvault.vault.azure.net/keys/key/0123abcd","value":")" +
                      value + "\"}");
  azure::StoredWrapped back = azure::parse_stored(stored, "z", "key", ref, vault, "https://myvault.vault.azure.net");
  EXPECT_EQ(back.alg, "RSA-OAEP-256");
  EXPECT_EQ(back.key.name, "key");
  EXPECT_EQ(back.key.version, "0123abcd");
  EXPECT_EQ(back.value, value);

  json elsewhere = out;
  elsewhere["kid"] = "https://evil.vault.azure.net/keys/key/0123abcd";
  EXPECT_EQ(state_of([&] { azure::wrapkey_stored(elsewhere, azure_site(), ref, vault, "A256KW"); }), kBadRequest);
  json other_key = out;
  other_key["kid"] = "https://myvault.vault.azure.net/keys/other/0123abcd";
  EXPECT_EQ(state_of([&] { azure::wrapkey_stored(other_key, azure_site(), ref, vault, "A256KW"); }), kBadRequest);
  json no_value = out;
  no_value.erase("value");
  EXPECT_EQ(state_of([&] { azure::wrapkey_stored(no_value, azure_site(), ref, vault, "A256KW"); }), kBadRequest);
}

TEST(AzureResponses, UnwrapkeyValue) {
  json out{{"kid", "https://myvault.vault.azure.net/keys/key/01"}, {"value", "AQID"}};
  SecureBytes p = azure::unwrapkey_value(out, "z");
  EXPECT_EQ(Bytes(p.data(), p.data() + p.size()), (Bytes{1, 2, 3}));
  EXPECT_EQ(state_of([] { azure::unwrapkey_value(json::parse(R"({"value":"A"})"), "z"); }), kBadRequest);
  EXPECT_EQ(state_of([] { azure::unwrapkey_value(json::parse("null"), "z"); }), kBadRequest);
}

// ---------------------------------------------------------------- metadata tokens

std::string token_state(long status, const std::string& body) {
  HttpResponse r;
  r.status = status;
  r.body = SecretString(body);
  return state_of([&] { parse_metadata_token(r, "g", "http://169.254.169.254/token"); }, "token request failed");
}

TEST(MetadataToken, Reads) {
  HttpResponse r;
  r.status = 200;
  r.body = SecretString(R"({"access_token":"ya29.tok","expires_in":3599,"token_type":"Bearer"})");
  MetadataToken t = parse_metadata_token(r, "g", "u");
  EXPECT_EQ(t.token.view(), "ya29.tok");
  EXPECT_EQ(t.expires_in, 3599);
  // Azure IMDS: expires_in as a string, token_type in any case.
  r.body = SecretString(R"({"access_token":"eyJ0","expires_in":"86399","token_type":"bearer","resource":"x"})");
  t = parse_metadata_token(r, "z", "u");
  EXPECT_EQ(t.token.view(), "eyJ0");
  EXPECT_EQ(t.expires_in, 86399);
  for (const char* lifetime : {R"("expires_in":-5)", R"("expires_in":"12x")", R"("expires_in":1e300)",
                               R"("expires_in":9223372036854775807)", R"("expires_in":"9999999999")",
                               R"("expires_in":true)"}) {
    r.body = SecretString(std::string(R"({"access_token":"t",)") + lifetime + "}");
    EXPECT_EQ(parse_metadata_token(r, "g", "u").expires_in, -1) << lifetime;
  }
}

TEST(MetadataToken, Refusals) {
  EXPECT_EQ(token_state(400, R"({"error":"invalid_request","error_description":"Identity not found"})"), kAuth);
  EXPECT_EQ(token_state(401, ""), kAuth);
  EXPECT_EQ(token_state(403, "Your client does not have permission"), kAuth);
  EXPECT_EQ(token_state(404, ""), kAuth);
  EXPECT_EQ(token_state(429, ""), kUnavailable);
  EXPECT_EQ(token_state(500, ""), kUnavailable);
  EXPECT_EQ(token_state(200, "not json"), kAuth);
  EXPECT_EQ(token_state(200, R"({"access_token":""})"), kAuth);
  EXPECT_EQ(token_state(200, R"({"access_token":5})"), kAuth);
  EXPECT_EQ(token_state(200, R"({"access_token":"t","token_type":"mac"})"), kAuth);
  EXPECT_EQ(token_state(200, R"({"access_token":"t","token_type":null})"), kAuth);
  HttpResponse r;
  r.status = 200;
  EXPECT_EQ(judge_metadata_response(r), Verdict::kSuccess);
  r.status = 503;
  EXPECT_EQ(judge_metadata_response(r), Verdict::kRetry);
  r.status = 403;
  EXPECT_EQ(judge_metadata_response(r), Verdict::kFail);
}

TEST(MetadataToken, CacheLifetime) {
  EXPECT_EQ(token_cache_seconds(-1), 0);
  EXPECT_EQ(token_cache_seconds(0), 0);
  EXPECT_EQ(token_cache_seconds(1), 1);
  EXPECT_EQ(token_cache_seconds(100), 50);
  EXPECT_EQ(token_cache_seconds(3599), 3539);
  EXPECT_EQ(token_cache_seconds(999999999), 999999939);
  EXPECT_EQ(token_cache_seconds(LONG_MAX), 999999939);
}

// ---------------------------------------------------------------- secret files

using SecretFile = test::TempFile;

TEST(SecretFiles, ReadTrimmedWithoutStreams) {
  SecretFile f(" \t token-value\r\n\n", 0640);
  EXPECT_EQ(read_secret_file(f.path(), "k", "token").view(), "token-value");
  SecretFile big(std::string(kMaxSecretFileSize, 'x'), 0600);
  EXPECT_EQ(read_secret_file(big.path(), "k", "token").size(), kMaxSecretFileSize);
}

TEST(SecretFiles, Refusals) {
  SecretFile huge(std::string(kMaxSecretFileSize + 1, 'x'), 0600);
  EXPECT_EQ(state_of([&] { read_secret_file(huge.path(), "k", "token"); }, "too large"), "F0000");
  EXPECT_EQ(state_of([&] { read_secret_file("/nonexistent/token", "k", "token"); }, "No such file"), "58P01");
  EXPECT_EQ(state_of([&] { read_secret_file("/tmp", "k", "token"); }, "could not read the token file"), "58P01");
  SecretFile world("t", 0644);
  EXPECT_EQ(state_of([&] { read_secret_file(world.path(), "k", "token"); }, "world-accessible"), "F0000");
  SecretFile empty("\n", 0600);
  EXPECT_EQ(state_of([&] { read_secret_file(empty.path(), "k", "token"); }, "empty"), "F0000");
}

// ---------------------------------------------------------------- KEK versions

TEST(KekVersions, Rfc3339) {
  std::int64_t us = 0;
  ASSERT_TRUE(parse_rfc3339("1970-01-01T00:00:00Z", us));
  EXPECT_EQ(us, 0);
  // date -u -d 2026-12-03T10:00:00Z +%s = 1796292000
  ASSERT_TRUE(parse_rfc3339("2026-12-03T10:00:00Z", us));
  EXPECT_EQ(us, 1796292000LL * 1000000);
  ASSERT_TRUE(parse_rfc3339("2026-12-03T10:00:00.123456789Z", us));  // Cloud KMS writes nanoseconds
  EXPECT_EQ(us, 1796292000LL * 1000000 + 123456);
  ASSERT_TRUE(parse_rfc3339("2026-12-03T10:00:00.5Z", us));
  EXPECT_EQ(us, 1796292000LL * 1000000 + 500000);
  ASSERT_TRUE(parse_rfc3339("2026-12-03T12:30:00+02:30", us));
  EXPECT_EQ(us, 1796292000LL * 1000000);
  ASSERT_TRUE(parse_rfc3339("2024-02-29T00:00:00Z", us));  // leap day: 1709164800
  EXPECT_EQ(us, 1709164800LL * 1000000);
  for (const char* bad : {"", "2026-12-03", "2026-12-03T10:00:00", "2026-13-01T00:00:00Z", "2025-02-29T00:00:00Z",
                          "2026-12-03T24:00:00Z", "2026-12-03T10:00:00.Z", "2026-12-03T10:00:00Zx",
                          "2026-12-03T10:00:00+0200", "x026-12-03T10:00:00Z"})
    EXPECT_FALSE(parse_rfc3339(bad, us)) << bad;
}

TEST(KekVersions, Behind) {
  KekVersion v{"3", 1000};
  EXPECT_TRUE(dek_behind_kek(v, "2", 5000));    // the wrapped form names an older version
  EXPECT_FALSE(dek_behind_kek(v, "3", 10));     // ... or the current one, whatever the time
  EXPECT_TRUE(dek_behind_kek(v, "", 999));      // opaque: wrapped before the version was made
  EXPECT_FALSE(dek_behind_kek(v, "", 1000));
  EXPECT_FALSE(dek_behind_kek(KekVersion{"1", 0}, "", 0));  // no older version
}

TEST(KekVersions, Vault) {
  KekVersion v = vault::latest_version(json::parse(R"({"data":{"latest_version":3,"keys":{"1":10,"2":20,"3":30}}})"), "v");
  EXPECT_EQ(v.version, "3");
  EXPECT_EQ(v.since_us, 30LL * 1000000);
  v = vault::latest_version(json::parse(R"({"data":{"latest_version":1,"keys":{"1":10}}})"), "v");
  EXPECT_EQ(v.version, "1");
  EXPECT_EQ(v.since_us, 0);
  for (const char* bad : {R"({"data":{}})", R"({"data":{"latest_version":"3"}})", R"({"data":{"latest_version":0}})",
                          R"({"data":{"latest_version":2,"keys":{"1":10}}})", "[]",
                          R"({"data":{"latest_version":2,"keys":{"2":9223372036854775807}}})"})
    EXPECT_EQ(state_of([&] { vault::latest_version(json::parse(bad), "v"); }, "read key failed: malformed"), kBadRequest)
        << bad;
  auto wv = [](const char* w) { return vault::wrapped_version(as_bytes(std::string_view(w))); };
  EXPECT_EQ(wv("vault:v12:abc"), "12");
  EXPECT_EQ(wv("vault:v:abc"), "");
  EXPECT_EQ(wv("vault:vx:abc"), "");
  EXPECT_EQ(wv("vault:v1"), "");
  EXPECT_EQ(wv("other"), "");
}

TEST(KekVersions, Aws) {
  EXPECT_EQ(aws::describe_key_arn(json::parse(R"({"KeyMetadata":{"Arn":"arn:aws:kms:r:1:key/k"}})"), "a"),
            "arn:aws:kms:r:1:key/k");
  EXPECT_EQ(state_of([] { aws::describe_key_arn(json::parse(R"({"KeyMetadata":{}})"), "a"); }, "DescribeKey failed"),
            kBadRequest);
  std::uint64_t n = 0;
  std::int64_t latest = 0;
  std::string marker = aws::key_rotations_page(
      json::parse(R"({"Rotations":[{"RotationDate":1.5e9},{"RotationDate":1700000000.25}],"Truncated":true,"NextMarker":"m2"})"),
      "a", n, latest);
  EXPECT_EQ(marker, "m2");
  EXPECT_EQ(n, 2u);
  EXPECT_EQ(latest, 1700000000250000LL);
  marker = aws::key_rotations_page(json::parse(R"({"Rotations":[],"Truncated":false})"), "a", n, latest);
  EXPECT_EQ(marker, "");
  EXPECT_EQ(n, 2u);
  for (const char* bad : {R"({})", R"({"Rotations":[{}]})", R"({"Rotations":[],"Truncated":true})",
                          R"({"Rotations":[{"RotationDate":1.7e40}]})", R"({"Rotations":[{"RotationDate":-1}]})"})
    EXPECT_EQ(state_of([&] { aws::key_rotations_page(json::parse(bad), "a", n, latest); }, "ListKeyRotations failed"),
              kBadRequest)
        << bad;
}

TEST(KekVersions, Gcp) {
  auto key = [](const std::string& primary) { return json::parse(R"({"name":"x","primary":)" + primary + "}"); };
  KekVersion v = gcp::primary_version(
      key(R"({"name":")" + std::string(kGcpKek) + R"(/cryptoKeyVersions/7","createTime":"2026-12-03T10:00:00.25Z"})"),
      gcp_site("get key"));
  EXPECT_EQ(v.version, "7");
  EXPECT_EQ(v.since_us, 1796292000LL * 1000000 + 250000);
  EXPECT_EQ(state_of([&] { gcp::primary_version(json::parse(R"({"name":"x"})"), gcp_site("get key")); }, "primary"),
            kBadRequest);
  EXPECT_EQ(state_of([&] {
              gcp::primary_version(key(R"({"name":"projects/p/locations/global/keyRings/r/cryptoKeys/other/cryptoKeyVersions/2","createTime":"2026-12-03T10:00:00Z"})"),
                                   gcp_site("get key"));
            }),
            kUnavailable);  // integrity: another CryptoKey's version
  EXPECT_EQ(state_of([&] {
              gcp::primary_version(key(R"({"name":")" + std::string(kGcpKek) + R"(/cryptoKeyVersions/2","createTime":"yesterday"})"),
                                   gcp_site("get key"));
            }, "createTime"),
            kBadRequest);
}

TEST(KekVersions, Azure) {
  azure::KeyRef ref{"key", ""};
  KekVersion v = azure::current_version(
      json::parse(R"({"key":{"kid":"https://myvault.vault.azure.net/keys/key/0123456789abcdef0123456789abcdef"},"attributes":{"created":1700000000}})"),
      azure_site("get key"), ref, vault_url_parts());
  EXPECT_EQ(v.version, "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(v.since_us, 1700000000LL * 1000000);
  for (const char* bad :
       {R"({"key":{"kid":"https://other.vault.azure.net/keys/key/0123456789abcdef0123456789abcdef"},"attributes":{"created":1}})",
        R"({"key":{"kid":"https://myvault.vault.azure.net/keys/other/0123456789abcdef0123456789abcdef"},"attributes":{"created":1}})",
        R"({"key":{"kid":"https://myvault.vault.azure.net/keys/key/0123456789abcdef0123456789abcdef"},"attributes":{}})"})
    EXPECT_EQ(state_of([&] { azure::current_version(json::parse(bad), azure_site("get key"), ref, vault_url_parts()); },
                       "get key failed: malformed"),
              kBadRequest)
        << bad;
}

}  // namespace
}  // namespace pg_envelope::remote
