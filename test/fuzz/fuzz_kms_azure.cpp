// Fuzzes the Azure Key Vault provider's response handling (src/kms/kms_responses.hpp,
// remote::azure): Key Vault errors, retry verdict, code and status mapping, wrapkey
// responses (kid checks, the stored form, which must read back), unwrapkey responses,
// and the stored wrapped DEK read from envelope.data_key. Input: see
// fuzz_kms_support.hpp; ops "wrapkey", "unwrapkey", "getkey" (the key read) and "stored" (the body is a
// stored wrapped DEK). Seeds: test/fuzz/corpus/kms_azure/.
#include <cstddef>
#include <cstdint>

#include "fuzz_kms_support.hpp"
#include "kms/kms_responses.hpp"
#include "pg_envelope/crypto.hpp"

using namespace pg_envelope;

namespace {

const remote::UrlParts& vault() {
  static const remote::UrlParts parts = [] {
    remote::UrlParts p;
    bool ok = remote::parse_url("https://myvault.vault.azure.net", p);
    FUZZ_CHECK(ok, "the vault URL parses");
    return p;
  }();
  return parts;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in = fuzz::read_input(data, size, {"unwrapkey", "wrapkey", "stored", "getkey"});
  const std::string vault_url = "https://myvault.vault.azure.net";
  remote::azure::KeyRef ref{"pg-envelope", ""};
  remote::azure::Site site{"fuzz", in.op, "pg-envelope", "/keys/pg-envelope", vault_url, "the token file \"/t\""};
  try {
    if (in.op == "stored") {
      auto s = remote::azure::parse_stored(as_bytes(in.result.response.body.view()), site.kms, "pg-envelope", ref,
                                           vault(), vault_url);
      FUZZ_CHECK(remote::azure::valid_key_name(s.key.name) && remote::azure::valid_key_version(s.key.version), "a stored kid names a valid key and version");
      return 0;
    }
    remote::azure::VaultError e = remote::azure::vault_error(in.result.response);
    for (char c : e.message) FUZZ_CHECK(c >= ' ' && c < 127, "a service message is printable ASCII (safe_message)");
    remote::azure::judge(in.result.response);
    remote::json out = remote::azure::result(in.result, site);
    FUZZ_CHECK(out.is_object(), "a successful result is a JSON object");
    if (in.op == "getkey") {
      KekVersion kv = remote::azure::current_version(out, site, ref, vault());
      FUZZ_CHECK(remote::azure::valid_key_version(kv.version), "a current version is a valid version");
    } else if (in.op == "wrapkey") {
      Bytes stored = remote::azure::wrapkey_stored(out, site, ref, vault(), "RSA-OAEP-256");
      // What wrap stores, unwrap must accept for the same KEK.
      auto back = remote::azure::parse_stored(stored, site.kms, "pg-envelope", ref, vault(), vault_url);
      FUZZ_CHECK(back.alg == "RSA-OAEP-256", "the stored form keeps the algorithm");
    } else {
      SecureBytes payload = remote::azure::unwrapkey_value(out, site.kms);
      remote::unbind_dek(payload.view(), DekBinding{"ssn", 17, 4}, site.kms);
    }
  } catch (const Error& err) {
    fuzz::check_error(err);
  }
  return 0;
}
