// The remote (HTTP) KMS providers without a network: option validation of all four
// through make_kms_provider (secret-looking, unknown, missing and mistyped options;
// https only except loopback and the cloud metadata services), KEK syntax, token
// sources that fail before any request, Azure's stored wrapped-DEK form, the DEK
// binding tag (remote::bind_dek / unbind_dek), the retry backoff and check_kms_url.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kms/bearer_token.hpp"
#include "kms/kms_messages.hpp"
#include "kms/remote_kms.hpp"
#include "kms/url.hpp"
#include "pg_envelope/crypto.hpp"
#include "pg_envelope/error.hpp"
#include "pg_envelope/http.hpp"
#include "pg_envelope/kms.hpp"
#include "test_support.hpp"

namespace pg_envelope {
namespace {

using test::catch_error;
using test::error_mentions;
using Json = nlohmann::json;

// No environment (no credentials) and a single short attempt, should anything
// ever reach the network.
KmsContext test_context() {
  KmsContext c;
  c.getenv = [](const char*) -> const char* { return nullptr; };
  c.http.max_attempts = 1;
  c.http.connect_timeout_ms = 500;
  c.http.attempt_timeout_ms = 1000;
  c.http.total_budget_ms = 1000;
  return c;
}

std::unique_ptr<KmsProvider> make(const std::string& provider, const std::string& options) {
  return make_kms_provider(KmsConfig{"k1", provider, options}, test_context());
}

// Expects `fn` to throw pg_envelope::Error with `state` whose message, detail or
// hint mentions `needle`.
void expect_error(const char* state, const std::function<void()>& fn, const std::string& needle = "") {
  auto e = catch_error(fn);
  ASSERT_TRUE(e.has_value()) << "no error; expected " << state;
  EXPECT_STREQ(e->sqlstate(), state) << e->what() << " / " << e->detail();
  if (!needle.empty()) {
    EXPECT_TRUE(error_mentions(*e, needle)) << "\"" << needle << "\" not in: " << e->what() << " / " << e->detail();
  }
}

struct ProviderCase {
  const char* provider;
  const char* minimal;     // the smallest valid options
  const char* url_option;  // the option naming the service's address
  const char* required;    // the option it cannot do without; nullptr: none
};

const ProviderCase kProviders[] = {
    {"vault-transit", R"({"address": "https://vault.example.com:8200"})", "address", "address"},
    {"aws-kms", R"({"region": "us-east-1"})", "endpoint", "region"},
    {"gcp-kms", R"({})", "endpoint", nullptr},
    {"azure-keyvault", R"({"vault_url": "https://myvault.vault.azure.net"})", "vault_url", "vault_url"},
};

std::string with(const char* minimal, const std::string& key, const Json& value) {
  Json o = Json::parse(minimal);
  o[key] = value;
  return o.dump();
}

// ---------------------------------------------------------------- options

TEST(RemoteKmsOptions, AcceptMinimalOptions) {
  for (const auto& p : kProviders) {
    SCOPED_TRACE(p.provider);
    auto kms = make(p.provider, p.minimal);
    ASSERT_NE(kms, nullptr);
    EXPECT_EQ(kms->kms_name(), "k1");
    expect_error("22023", [&] { kms->default_kek(); }, "KEK");
  }
}

TEST(RemoteKmsOptions, RefuseSecretLookingOptionsWithoutEchoingThem) {
  const char* names[] = {"token", "secret_access_key", "password", "client_secret", "api_key", "private_key",
                         "VAULT_TOKEN", "credentials", "AccessToken"};
  for (const auto& p : kProviders)
    for (const char* name : names) {
      SCOPED_TRACE(std::string(p.provider) + " " + name);
      auto e = catch_error([&] { make(p.provider, with(p.minimal, name, "hunter2-secret-value")); });
      ASSERT_TRUE(e.has_value());
      EXPECT_STREQ(e->sqlstate(), "22023");
      EXPECT_TRUE(error_mentions(*e, "looks like a secret")) << e->what();
      EXPECT_FALSE(error_mentions(*e, "hunter2")) << "the value was echoed";
    }
}

TEST(RemoteKmsOptions, AcceptTokenFileAsAPath) {
  for (const char* provider : {"vault-transit", "gcp-kms", "azure-keyvault"}) {
    const auto& p = *std::find_if(std::begin(kProviders), std::end(kProviders),
                                  [&](const ProviderCase& c) { return std::string(c.provider) == provider; });
    SCOPED_TRACE(provider);
    EXPECT_NE(make(provider, with(p.minimal, "token_file", "/nonexistent/token")), nullptr);
  }
}

TEST(RemoteKmsOptions, RefuseUnknownOptions) {
  for (const auto& p : kProviders) {
    SCOPED_TRACE(p.provider);
    expect_error("22023", [&] { make(p.provider, with(p.minimal, "adress", "https://x")); }, "unknown option \"adress\"");
    // The detail lists what is valid, including the address option.
    expect_error("22023", [&] { make(p.provider, with(p.minimal, "adress", "https://x")); }, p.url_option);
  }
}

TEST(RemoteKmsOptions, RequireMandatoryOptions) {
  for (const auto& p : kProviders) {
    SCOPED_TRACE(p.provider);
    if (p.required == nullptr) {
      EXPECT_NE(make(p.provider, "{}"), nullptr);
      continue;
    }
    expect_error("22023", [&] { make(p.provider, "{}"); }, std::string("needs option \"") + p.required + "\"");
    expect_error("22023", [&] { make(p.provider, with(p.minimal, p.required, "")); }, p.required);
    expect_error("22023", [&] { make(p.provider, with(p.minimal, p.required, 42)); }, p.required);
  }
}

TEST(RemoteKmsOptions, RefuseWrongTypesAndNonObjects) {
  for (const auto& p : kProviders) {
    SCOPED_TRACE(p.provider);
    expect_error("22023", [&] { make(p.provider, with(p.minimal, p.url_option, 8200)); }, p.url_option);
    expect_error("22023", [&] { make(p.provider, with(p.minimal, "ca_file", true)); }, "ca_file");
    expect_error("22023", [&] { make(p.provider, "[1, 2]"); }, "must be a JSON object");
    expect_error("22023", [&] { make(p.provider, "{"); }, "must be a JSON object");
  }
}

TEST(RemoteKmsOptions, RefusePlainHttpToOtherHosts) {
  for (const auto& p : kProviders)
    for (const char* url : {"http://kms.example.com", "http://10.0.0.1:8200", "http://[::2]:8200",
                            "http://127.0.0.1@evil.example.com", "ftp://127.0.0.1", "not a url"}) {
      SCOPED_TRACE(std::string(p.provider) + " " + url);
      expect_error("22023", [&] { make(p.provider, with(p.minimal, p.url_option, url)); });
    }
}

TEST(RemoteKmsOptions, AcceptHttpsAndLoopbackHttp) {
  for (const auto& p : kProviders)
    for (const char* url : {"https://kms.example.com", "https://kms.example.com:8443/", "http://127.0.0.1:8200",
                            "http://127.9.8.7", "http://localhost:8200", "http://[::1]:8200"}) {
      SCOPED_TRACE(std::string(p.provider) + " " + url);
      EXPECT_NE(make(p.provider, with(p.minimal, p.url_option, url)), nullptr);
    }
}

// Paths are appended to the new providers' base URLs: no query, fragment or user info.
TEST(RemoteKmsOptions, CloudBaseUrlsAreBareUrls) {
  for (const char* url : {"https://kms.example.com/?x=1", "https://kms.example.com#f", "https://u@kms.example.com"}) {
    SCOPED_TRACE(url);
    expect_error("22023", [&] { make("gcp-kms", with("{}", "endpoint", url)); }, "endpoint");
    expect_error("22023", [&] { make("azure-keyvault", with("{}", "vault_url", url)); }, "vault_url");
  }
  expect_error("22023", [&] { make("azure-keyvault", R"({"vault_url": "https://v.vault.azure.net/keys"})"); },
               "vault_url");
}

// The metadata services speak plain http on a link-local address; nothing else may.
TEST(RemoteKmsOptions, MetadataUrls) {
  const std::pair<const char*, const char*> options[] = {{"gcp-kms", "metadata_url"}, {"azure-keyvault", "imds_url"}};
  for (const auto& [provider, option] : options) {
    const char* minimal = std::string(provider) == "gcp-kms" ? "{}" : kProviders[3].minimal;
    for (const char* ok : {"http://169.254.169.254", "http://metadata.google.internal/", "http://127.0.0.1:8080",
                           "https://metadata.example.com"}) {
      SCOPED_TRACE(std::string(provider) + " " + ok);
      EXPECT_NE(make(provider, with(minimal, option, ok)), nullptr);
    }
    for (const char* bad : {"http://metadata.example.com", "http://10.0.0.1", "http://169.254.169.254.evil.com",
                            "http://169.254.169.254/?x"}) {
      SCOPED_TRACE(std::string(provider) + " " + bad);
      expect_error("22023", [&] { make(provider, with(minimal, option, bad)); });
    }
  }
}

TEST(RemoteKmsOptions, AzureAlgorithm) {
  const char* minimal = kProviders[3].minimal;
  EXPECT_NE(make("azure-keyvault", with(minimal, "algorithm", "RSA-OAEP-256")), nullptr);
  EXPECT_NE(make("azure-keyvault", with(minimal, "algorithm", "A256KW")), nullptr);
  for (const char* bad : {"RSA1_5", "RSA-OAEP", "a256kw", ""})
    expect_error("22023", [&] { make("azure-keyvault", with(minimal, "algorithm", bad)); }, "algorithm");
}

TEST(RemoteKmsOptions, ProviderNames) {
  for (const char* p : {"local", "vault-transit", "aws-kms", "gcp-kms", "azure-keyvault"}) EXPECT_TRUE(is_known_provider(p)) << p;
  for (const char* p : {"", "gcp", "azure", "GCP-KMS", "ibm-kms"}) EXPECT_FALSE(is_known_provider(p)) << p;
  expect_error("22023", [] { make("ibm-kms", "{}"); }, "unknown KMS provider");
  expect_error("22023", [] { make("ibm-kms", "{}"); }, "\"gcp-kms\"");
  expect_error("22023", [] { make("ibm-kms", "{}"); }, "\"azure-keyvault\"");
}

// The one provider table: its names are the providers tested here, in this order, and
// each builds, is known, and is listed when an unknown provider is asked for.
TEST(RemoteKmsOptions, ProviderTable) {
  auto names = remote_provider_names();
  ASSERT_EQ(names.size(), std::size(kProviders));
  for (std::size_t i = 0; i < names.size(); ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(names[i], kProviders[i].provider);
    EXPECT_TRUE(is_known_provider(names[i]));
    EXPECT_NE(make(std::string(names[i]), kProviders[i].minimal), nullptr);
    expect_error("22023", [] { make("ibm-kms", "{}"); }, "\"" + std::string(names[i]) + "\"");
  }
}

// ---------------------------------------------------------------- KEK syntax

TEST(GcpKms, KekIsACryptoKeyName) {
  auto kms = make("gcp-kms", "{}");
  for (const char* ok : {"projects/my-project/locations/global/keyRings/ring-1/cryptoKeys/key_1",
                         "projects/example.com:proj/locations/us-east1/keyRings/R/cryptoKeys/K",
                         "projects/123456789/locations/europe-west4/keyRings/r/cryptoKeys/k"})
    EXPECT_NO_THROW(kms->validate_kek(ok)) << ok;
  const std::string long_id(64, 'k');
  for (const std::string& bad : std::vector<std::string>{
           "", "key", "projects/p/locations/l/keyRings/r", "projects/p/locations/l/keyRings/r/cryptoKeys/",
        "projects/p/locations/l/keyRings/r/cryptoKeys/k/", "projects/p/locations/l/keyRings/r/cryptokeys/k",
        "projects//locations/l/keyRings/r/cryptoKeys/k", "/projects/p/locations/l/keyRings/r/cryptoKeys/k",
        "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
        "projects/p/locations/l/keyRings/r/cryptoKeys/k:encrypt", "projects/p/locations/l/keyRings/r/cryptoKeys/k?x=1",
        "projects/P/locations/l/keyRings/r/cryptoKeys/k", "projects/p/locations/l/keyRings/r/cryptoKeys/" + long_id,
        "projects/p/locations/l/keyRings/../cryptoKeys/k"}) {
    SCOPED_TRACE(bad);
    expect_error("22023", [&] { kms->validate_kek(bad); }, "CryptoKey");
  }
}

TEST(AzureKeyVault, KekIsANameOrNameAndVersion) {
  auto kms = make("azure-keyvault", kProviders[3].minimal);
  for (const char* ok : {"key-1", "K", "key-1/0123456789abcdef0123456789abcdef"}) EXPECT_NO_THROW(kms->validate_kek(ok)) << ok;
  for (const std::string& bad : std::vector<std::string>{"", "key_1", "key/", "/0123", "key/v/x", "key/ver-1",
                                                        "key/ver?x", std::string(128, 'a'),
                                                        "key/" + std::string(65, 'a'), "../keys"}) {
    SCOPED_TRACE(bad);
    expect_error("22023", [&] { kms->validate_kek(bad); }, "name/version");
  }
}

// ---------------------------------------------------------------- tokens (no network)

const DekBinding kBinding{"ssn", 17, 4};
const Bytes kDek(32, 0x5A);

const char* kGcpKek = "projects/p/locations/global/keyRings/r/cryptoKeys/k";
const char* kGcpLoopback = R"({"endpoint": "http://127.0.0.1:9"})";
const char* kAzureLoopback = R"({"vault_url": "http://127.0.0.1:9"})";

using test::TempFile;

TEST(CloudTokens, NoSourceIsAnAuthenticationError) {
  auto gcp = make("gcp-kms", kGcpLoopback);
  expect_error("28000", [&] { gcp->wrap(kGcpKek, kBinding, kDek); }, "GOOGLE_OAUTH_ACCESS_TOKEN");
  expect_error("28000", [&] { gcp->wrap(kGcpKek, kBinding, kDek); }, "metadata_url");
  auto azure = make("azure-keyvault", kAzureLoopback);
  expect_error("28000", [&] { azure->wrap("key", kBinding, kDek); }, "AZURE_ACCESS_TOKEN");
  expect_error("28000", [&] { azure->wrap("key", kBinding, kDek); }, "imds_url");
}

TEST(CloudTokens, TokenFileProblems) {
  for (const auto& [provider, minimal] :
       {std::pair{"gcp-kms", kGcpLoopback}, std::pair{"azure-keyvault", kAzureLoopback}}) {
    SCOPED_TRACE(provider);
    auto wrap = [&](const std::string& file) {
      auto kms = make(provider, with(minimal, "token_file", file));
      kms->wrap(std::string(provider) == "gcp-kms" ? kGcpKek : "key", kBinding, kDek);
    };
    expect_error("58P01", [&] { wrap("/nonexistent/pg_envelope/token"); }, "/nonexistent/pg_envelope/token");
    TempFile world("ya29.token\n", 0604);
    expect_error("F0000", [&] { wrap(world.path()); }, "world-accessible");
    TempFile empty(" \n", 0600);
    expect_error("F0000", [&] { wrap(empty.path()); }, "empty");
    // A token goes into a header line: embedded spaces or line breaks are refused,
    // and the error does not show the token.
    TempFile spaced("ya29.abc\r\nX-Injected: 1\n", 0600);
    auto e = catch_error([&] { wrap(spaced.path()); });
    ASSERT_TRUE(e.has_value());
    EXPECT_STREQ(e->sqlstate(), "28000");
    EXPECT_TRUE(error_mentions(*e, "malformed access token")) << e->what();
    EXPECT_FALSE(error_mentions(*e, "ya29.abc"));
  }
}

// ---------------------------------------------------------------- Azure stored form

// unwrap checks the stored {"alg", "kid", "value"} before any request; a valid one
// gets as far as the token (none configured here: 28000).
TEST(AzureKeyVault, StoredWrappedDekIsCheckedBeforeAnyRequest) {
  auto kms = make("azure-keyvault", R"({"vault_url": "https://myvault.vault.azure.net"})");
  auto unwrap = [&](const std::string& kek, const std::string& stored) {
    kms->unwrap(kek, kBinding, as_bytes(stored));
  };
  auto stored = [](const char* alg, const char* kid) {
    return Json{{"alg", alg}, {"kid", kid}, {"value", "AAAA"}}.dump();
  };
  const char* kid = "https://myvault.vault.azure.net/keys/key/0123456789abcdef";
  expect_error("28000", [&] { unwrap("key", stored("RSA-OAEP-256", kid)); }, "no access token");
  expect_error("28000", [&] { unwrap("key/0123456789abcdef", stored("A256KW", kid)); }, "no access token");
  expect_error("28000", [&] { unwrap("KEY", stored("RSA-OAEP-256", "https://MyVault.vault.azure.net:443/keys/key/01")); },
               "no access token");

  expect_error("22000", [&] { unwrap("key", "vault:v1:abc"); }, "malformed wrapped data key");
  expect_error("22000", [&] { unwrap("key", R"({"kid": "x"})"); }, "malformed wrapped data key");
  expect_error("22000", [&] { unwrap("key", stored("RSA1_5", kid)); }, "malformed wrapped data key");
  // Never to another host (the token would go there), nor another port or key.
  expect_error("22000", [&] { unwrap("key", stored("RSA-OAEP-256", "https://evil.vault.azure.net/keys/key/01")); },
               "another key vault");
  expect_error("22000", [&] { unwrap("key", stored("RSA-OAEP-256", "https://myvault.vault.azure.net:8443/keys/key/01")); },
               "another key vault");
  expect_error("22000", [&] { unwrap("key", stored("RSA-OAEP-256", "https://myvault.vault.azure.net/secrets/key/01")); },
               "another key vault");
  expect_error("22000", [&] { unwrap("key", stored("RSA-OAEP-256", "https://myvault.vault.azure.net/keys/key")); },
               "another key vault");
  expect_error("22000", [&] { unwrap("key", stored("RSA-OAEP-256", "https://myvault.vault.azure.net/keys/other/01")); },
               "another key");
  expect_error("22000", [&] { unwrap("key/02", stored("RSA-OAEP-256", "https://myvault.vault.azure.net/keys/key/01")); },
               "another key");
}

// A test vault reached over loopback http: Key Vault still writes https kids.
TEST(AzureKeyVault, LoopbackVaultAcceptsItsHttpsKids) {
  auto kms = make("azure-keyvault", R"({"vault_url": "http://127.0.0.1:8200"})");
  std::string ok = Json{{"alg", "RSA-OAEP-256"}, {"kid", "https://127.0.0.1:8200/keys/key/01"}, {"value", "AA"}}.dump();
  expect_error("28000", [&] { kms->unwrap("key", kBinding, as_bytes(ok)); }, "no access token");
  std::string other = Json{{"alg", "RSA-OAEP-256"}, {"kid", "https://127.0.0.1:8201/keys/key/01"}, {"value", "AA"}}.dump();
  expect_error("22000", [&] { kms->unwrap("key", kBinding, as_bytes(other)); }, "another key vault");
}

// ---------------------------------------------------------------- DEK binding

Bytes copy_of(const SecureBytes& s) { return Bytes(s.data(), s.data() + s.size()); }

TEST(DekBindingTag, RoundTripsForTheSameBinding) {
  Bytes dek(32);
  random_bytes(dek);
  SecureBytes payload = remote::bind_dek(dek, kBinding);
  ASSERT_EQ(payload.size(), 48u);
  EXPECT_EQ(Bytes(payload.data(), payload.data() + 32), dek);
  EXPECT_EQ(copy_of(remote::unbind_dek(payload.view(), kBinding, "k1")), dek);
  // Deterministic: the same binding gives the same tag.
  EXPECT_EQ(copy_of(remote::bind_dek(dek, kBinding)), copy_of(payload));
}

TEST(DekBindingTag, RefusesAnotherKeyNameIdOrVersion) {
  SecureBytes payload = remote::bind_dek(kDek, kBinding);
  const DekBinding others[] = {{"SSN", 17, 4}, {"ssn2", 17, 4}, {"ss", 17, 4}, {"ssn", 18, 4},
                               {"ssn", 17, 5}, {"ssn", 4, 17}, {"", 17, 4}};
  for (const auto& other : others) {
    SCOPED_TRACE(other.key_name + " " + std::to_string(other.key_id) + " " + std::to_string(other.version));
    expect_error("22000", [&] { remote::unbind_dek(payload.view(), other, "k1"); }, "does not belong to key");
  }
}

TEST(DekBindingTag, RefusesWrongLengthsAndTamperedTags) {
  SecureBytes payload = remote::bind_dek(kDek, kBinding);
  Bytes p = copy_of(payload);
  for (std::size_t len : {0u, 32u, 47u}) {
    SCOPED_TRACE(len);
    expect_error("22000", [&] { remote::unbind_dek(ByteView(p.data(), len), kBinding, "k1"); }, "k1");
  }
  Bytes longer = p;
  longer.push_back(0);
  expect_error("22000", [&] { remote::unbind_dek(longer, kBinding, "k1"); });
  for (std::size_t i = 32; i < p.size(); ++i) {
    Bytes t = p;
    t[i] ^= 0x01;
    expect_error("22000", [&] { remote::unbind_dek(t, kBinding, "k1"); });
  }
}

// ---------------------------------------------------------------- backoff

TEST(Backoff, FullJitterBelowAnExponentialCappedCeiling) {
  const std::uint32_t randoms[] = {0u, 1u, 99u, 12345u, 0x7FFFFFFFu, 0xFFFFFFFFu};
  for (int attempt = 1; attempt <= 40; ++attempt) {
    const long ceiling = attempt < 5 ? std::min(2000L, 100L << attempt) : 2000L;
    for (std::uint32_t r : randoms) {
      long d = backoff_delay_ms(attempt, r);
      EXPECT_GE(d, 0) << attempt;
      EXPECT_LT(d, ceiling) << attempt << " " << r;
    }
    EXPECT_EQ(backoff_delay_ms(attempt, 0), 0);
    EXPECT_EQ(backoff_delay_ms(attempt, static_cast<std::uint32_t>(ceiling - 1)), ceiling - 1);
  }
  EXPECT_EQ(backoff_delay_ms(1, 199), 199);
  EXPECT_EQ(backoff_delay_ms(1, 200), 0);
  EXPECT_EQ(backoff_delay_ms(4, 1599), 1599);
  EXPECT_EQ(backoff_delay_ms(5, 1999), 1999);
  EXPECT_EQ(backoff_delay_ms(INT_MAX, 0xFFFFFFFFu), static_cast<long>(0xFFFFFFFFu % 2000));
}

// ---------------------------------------------------------------- check_kms_url

TEST(CheckKmsUrl, HttpsAnywhereHttpOnlyToLoopback) {
  for (const char* ok : {"https://kms.us-east-1.amazonaws.com", "https://10.0.0.1:8200/", "http://127.0.0.1:8200",
                         "http://127.1.2.3", "http://localhost:1234", "http://[::1]:8200", "http://[0:0:0:0:0:0:0:1]/",
                         "http://2130706433/"})
    EXPECT_NO_THROW(check_kms_url(ok, "k1")) << ok;
  for (const char* bad : {"http://kms.example.com", "http://10.0.0.1", "http://[::2]", "http://128.0.0.1",
                          "http://127.0.0.1@kms.example.com/", "ftp://127.0.0.1", "file:///etc/passwd", "not a url",
                          "", "https://", "127.0.0.1:8200"}) {
    SCOPED_TRACE(bad);
    expect_error("22023", [&] { check_kms_url(bad, "k1"); }, "\"k1\"");
  }
}

// ---------------------------------------------------------------- helpers of the cloud providers

// Server messages go into errors: quoted input (possibly key material) never does.
TEST(SafeMessage, RedactsQuotedInputAndControlCharacters) {
  EXPECT_EQ(remote::safe_message(R"(Invalid value at 'plaintext' (TYPE_BYTES), Base64 decoding failed for "c2VjcmV0IGtleQ")"),
            R"(Invalid value at 'plaintext' (TYPE_BYTES), Base64 decoding failed for "...")");
  EXPECT_EQ(remote::safe_message("a \"x\" b \"y"), "a \"...\" b \"...\"");  // an unclosed quote hides the rest
  EXPECT_EQ(remote::safe_message("line\r\nX-Header: 1\t\x01."), "line  X-Header: 1");
  EXPECT_EQ(remote::safe_message("Key not found.  "), "Key not found");
  std::string long_text(1000, 'a');
  std::string cut = remote::safe_message(long_text);
  EXPECT_LE(cut.size(), 203u);
  EXPECT_GE(cut.size(), 200u);
}

TEST(ParseUrl, DefaultPortsAndLowerCase) {
  remote::UrlParts p;
  ASSERT_TRUE(remote::parse_url("HTTPS://MyVault.Vault.Azure.NET/keys/k/1", p));
  EXPECT_EQ(p.scheme, "https");
  EXPECT_EQ(p.host, "myvault.vault.azure.net");
  EXPECT_EQ(p.port, "443");
  EXPECT_EQ(p.path, "/keys/k/1");
  ASSERT_TRUE(remote::parse_url("http://127.0.0.1:8200", p));
  EXPECT_EQ(p.port, "8200");
  EXPECT_EQ(p.path, "/");
  EXPECT_FALSE(remote::parse_url("no scheme", p));
}

// A host that only starts with "127." is a DNS name that can resolve anywhere; plain
// http to it must be refused, while real loopback addresses are accepted.
TEST(CheckKmsUrl, RefusesNamesThatOnlyStartWith127) {
  for (const char* bad : {"http://127.0.0.1.nip.io/", "http://127.evil.example.com/"}) {
    SCOPED_TRACE(bad);
    expect_error("22023", [&] { check_kms_url(bad, "k1"); });
  }
  for (const char* good : {"http://127.0.0.1:8200/", "http://127.8.9.10/", "http://[::1]:8200/", "http://localhost/"}) {
    SCOPED_TRACE(good);
    EXPECT_NO_THROW(check_kms_url(good, "k1"));
  }
}

}  // namespace
}  // namespace pg_envelope
