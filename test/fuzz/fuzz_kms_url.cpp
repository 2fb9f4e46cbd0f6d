// Fuzzes URL handling of the remote providers (src/kms/url.hpp): remote::parse_url
// (the kid checks of Azure, the metadata exceptions), check_kms_url and
// check_base_url (option validation of every provider). Input: the URL text. Seeds:
// test/fuzz/corpus/kms_url/.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_kms_support.hpp"
#include "kms/kms_responses.hpp"
#include "kms/url.hpp"

using namespace pg_envelope;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view url(reinterpret_cast<const char*>(data), size);
  remote::UrlParts p;
  if (remote::parse_url(url, p)) {
    for (char c : p.scheme) FUZZ_CHECK(!(c >= 'A' && c <= 'Z'), "scheme and host are lower case");
    for (char c : p.host) FUZZ_CHECK(!(c >= 'A' && c <= 'Z'), "scheme and host are lower case");
    FUZZ_CHECK(!p.port.empty(), "a parsed URL always has a port");
    remote::azure::KeyRef ref;
    remote::UrlParts vault;
    if (remote::parse_url("https://myvault.vault.azure.net", vault) && remote::azure::parse_kid(std::string(url), vault, ref))
      FUZZ_CHECK(remote::azure::valid_key_name(ref.name) && remote::azure::valid_key_version(ref.version), "an accepted kid names a valid key and version");
  }
  bool kms_ok = false;
  try {
    check_kms_url(url, "fuzz");
    kms_ok = true;
  } catch (const Error& e) {
    fuzz::check_error(e);
  }
  bool base_ok = false;
  try {
    remote::check_base_url(url, "fuzz", "endpoint");
    base_ok = true;
  } catch (const Error& e) {
    fuzz::check_error(e);
  }
  try {
    remote::check_base_url(url, "fuzz", "metadata_url", /*metadata=*/true);
  } catch (const Error& e) {
    fuzz::check_error(e);
    FUZZ_CHECK(!base_ok, "the metadata form of check_base_url allows at least what the plain form allows");  // the metadata form only allows more
  }
  if (base_ok) FUZZ_CHECK(kms_ok, "a valid base URL is a valid KMS URL");  // a base URL is also a KMS URL
  return 0;
}
