// Fuzzes the Google credentials file readers (src/kms/gcp_credentials.hpp:
// credentials_type, parse_service_account_key) and, for an accepted key, the PEM
// reading and RS256 signing of the JWT (src/kms/jwt.hpp) and the certificate
// thumbprints of the Azure client-certificate file (the same PEM text). The whole
// input is the file. Seeds: test/fuzz/corpus/kms_gcp_service_account/.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "fuzz_kms_support.hpp"
#include "kms/gcp_credentials.hpp"
#include "kms/jwt.hpp"

using namespace pg_envelope;

namespace {
bool mentions(const Error& e, std::string_view s) {
  return std::string_view(e.what()).find(s) != std::string_view::npos ||
         std::string_view(e.detail()).find(s) != std::string_view::npos ||
         std::string_view(e.hint()).find(s) != std::string_view::npos;
}

// The private_key string of the input, as nlohmann reads it ("" when none).
std::string private_key_of(std::string_view text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) return {};
  auto it = j.find("private_key");
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string type = remote::gcp::credentials_type(text);
  FUZZ_CHECK(type.size() <= 64, "a credentials type is cut to 64 characters");
  std::string pk = private_key_of(text);
  try {
    remote::gcp::ServiceAccountKey key = remote::gcp::parse_service_account_key(text, "fuzz", "the file \"/f\"");
    FUZZ_CHECK(type == "service_account" && key.type == type, "only a service_account key is accepted");
    FUZZ_CHECK(key.client_email.find('@') != std::string::npos, "a client_email has an @");
    for (char c : key.client_email) FUZZ_CHECK(c > ' ' && c < 127 && c != '"', "a client_email is visible ASCII");
    for (char c : key.private_key_id) FUZZ_CHECK(c > ' ' && c < 127 && c != '"', "a key id is visible ASCII");
    FUZZ_CHECK(!key.token_uri.empty(), "a token URI is always set");
    FUZZ_CHECK(key.private_key.view().find("PRIVATE KEY-----") != std::string_view::npos, "a private key is PEM");
    try {
      SecretString jwt = remote::gcp::service_account_assertion(key, "https://t", 1700000000, "fuzz", "the file");
      FUZZ_CHECK(std::count(jwt.view().begin(), jwt.view().end(), '.') == 2, "a JWT has three parts");
    } catch (const Error& e) {
      fuzz::check_error(e);
      FUZZ_CHECK(pk.size() < 16 || !mentions(e, pk), "the private key never appears in an error");
    }
    try {
      remote::jwt::certificate_thumbprints(key.private_key.view(), "fuzz", "the file");
    } catch (const Error& e) {
      fuzz::check_error(e);
    }
  } catch (const Error& e) {
    fuzz::check_error(e);
    FUZZ_CHECK(std::string_view(e.sqlstate()) == "F0000", "a bad key file is F0000");
    FUZZ_CHECK(pk.size() < 16 || !mentions(e, pk), "the private key never appears in an error");
  }
  return 0;
}
