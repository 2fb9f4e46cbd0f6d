// Fuzzes the Vault Transit provider's response handling (src/kms/kms_responses.hpp,
// remote::vault): retry verdict, status and "errors" mapping, and the fields of
// encrypt, decrypt and rewrap responses, the KEK version of a key read ("keys") and of
// a wrapped DEK. Input: see fuzz_kms_support.hpp; ops "encrypt", "decrypt", "rewrap", "keys". Seeds: test/fuzz/corpus/kms_vault/.
#include <cstddef>
#include <cstdint>

#include "fuzz_kms_support.hpp"
#include "kms/kms_responses.hpp"
#include "pg_envelope/crypto.hpp"

using namespace pg_envelope;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in = fuzz::read_input(data, size, {"decrypt", "encrypt", "rewrap", "keys"});
  remote::vault::Site site{"fuzz", in.op, "pg-envelope", "https://vault.example.com:8200", "transit"};
  Verdict v = remote::vault::judge(in.result.response);
  long s = in.result.response.status;
  FUZZ_CHECK((v == Verdict::kSuccess) == (s >= 200 && s < 300), "success is exactly a 2xx");
  try {
    remote::json out = remote::vault::result(in.result, site);
    FUZZ_CHECK(in.result.failure == HttpFailure::kNone && s >= 200 && s < 300, "only a 2xx without transport failure is returned");
    if (in.op == "keys") {
      KekVersion kv = remote::vault::latest_version(out, site.kms);
      FUZZ_CHECK(!kv.version.empty() && kv.since_us >= 0, "a latest version is named");
      std::string w = remote::vault::wrapped_version(as_bytes(in.result.response.body.view()));
      FUZZ_CHECK(w.size() <= 10, "a wrapped version is at most 10 digits");
    } else if (in.op == "decrypt") {
      SecureBytes payload = remote::vault::plaintext(out, site.kms);
      remote::unbind_dek(payload.view(), DekBinding{"ssn", 17, 4}, site.kms);
    } else {
      Bytes c = remote::vault::ciphertext(out, site.kms, in.op);
      FUZZ_CHECK(c.size() >= 7, "a ciphertext starts with \"vault:v\"");
    }
  } catch (const Error& e) {
    fuzz::check_error(e);
  }
  return 0;
}
