// Fuzzes the Google Cloud KMS provider's response handling (src/kms/kms_responses.hpp,
// remote::gcp): Google API errors, retry verdict, status mapping, and the integrity
// checks and fields of encrypt and decrypt responses. Input: see
// fuzz_kms_support.hpp; ops "encrypt", "decrypt", "get" (the CryptoKey). Seeds: test/fuzz/corpus/kms_gcp/.
#include <cstddef>
#include <cstdint>

#include "fuzz_kms_support.hpp"
#include "kms/kms_responses.hpp"

using namespace pg_envelope;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in = fuzz::read_input(data, size, {"decrypt", "encrypt", "get"});
  remote::gcp::Site site{"fuzz", in.op, "projects/p/locations/global/keyRings/r/cryptoKeys/k",
                         "https://cloudkms.googleapis.com", "the token file \"/t\""};
  remote::gcp::GoogleError e = remote::gcp::google_error(in.result.response);
  FUZZ_CHECK(e.status.size() <= 40, "a status name is at most 40 characters");
  for (char c : e.message) FUZZ_CHECK(c >= ' ' && c < 127, "a service message is printable ASCII (safe_message)");  // safe_message()
  remote::gcp::judge(in.result.response);
  try {
    remote::json out = remote::gcp::result(in.result, site);
    FUZZ_CHECK(out.is_object(), "a successful result is a JSON object");
    if (in.op == "get") {
      KekVersion kv = remote::gcp::primary_version(out, site);
      FUZZ_CHECK(!kv.version.empty() && kv.version.size() <= 10, "a primary version is a number");
    } else if (in.op == "encrypt") {
      Bytes c = remote::gcp::encrypt_ciphertext(out, site);
      FUZZ_CHECK(!c.empty(), "an encrypt ciphertext is not empty");
    } else {
      SecureBytes payload = remote::gcp::decrypt_plaintext(out, site);
      remote::unbind_dek(payload.view(), DekBinding{"ssn", 17, 4}, site.kms);
    }
  } catch (const Error& err) {
    fuzz::check_error(err);
  }
  return 0;
}
