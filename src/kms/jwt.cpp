// RS256 JSON Web Tokens (see jwt.hpp).
#include "jwt.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>
#include <vector>

#include "pg_envelope/crypto.hpp"
#include "pg_envelope/encoding.hpp"
#include "pg_envelope/error.hpp"

namespace pg_envelope::remote::jwt {

namespace {

struct BioFree {
  void operator()(BIO* b) const noexcept { BIO_free(b); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const noexcept { EVP_PKEY_free(k); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const noexcept { EVP_MD_CTX_free(c); }
};
struct X509Free {
  void operator()(X509* x) const noexcept { X509_free(x); }
};

// OpenSSL asks for a passphrase for an encrypted key: none is given (and no
// terminal is ever prompted).
extern "C" int no_passphrase(char*, int, int, void*) noexcept { return -1; }

std::unique_ptr<BIO, BioFree> memory_bio(std::string_view pem) {
  return std::unique_ptr<BIO, BioFree>(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

[[noreturn]] void bad_file(const std::string& kms, const std::string& origin, const std::string& why) {
  ERR_clear_error();
  throw Error(sqlstate::kConfigFileError, "invalid credentials for KMS \"" + kms + "\"",
              "In " + origin + ": " + why, "Check the file; pg_envelope needs an unencrypted PEM RSA key.");
}

std::unique_ptr<EVP_PKEY, PkeyFree> read_private_key(std::string_view pem, const std::string& kms,
                                                     const std::string& origin) {
  if (pem.size() > 1u << 20) bad_file(kms, origin, "the PEM text is too large.");
  auto bio = memory_bio(pem);
  if (!bio) throw std::bad_alloc();
  std::unique_ptr<EVP_PKEY, PkeyFree> key(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr));
  if (!key) bad_file(kms, origin, "no readable, unencrypted PEM private key was found.");
  if (EVP_PKEY_base_id(key.get()) != EVP_PKEY_RSA) bad_file(kms, origin, "the private key is not an RSA key.");
  return key;
}

}  // namespace

SecretString segment(const json& value) {
  SecretString text = dump_json_secret(value);
  return base64url_encode(as_bytes(text.view()));
}

SecretString sign_rs256(const json& header, const json& claims, std::string_view pem, const std::string& kms,
                        const std::string& origin) {
  auto key = read_private_key(pem, kms, origin);
  SecretString out = segment(header);
  out.push_back('.');
  out.append(segment(claims).view());

  std::unique_ptr<EVP_MD_CTX, MdCtxFree> md(EVP_MD_CTX_new());
  if (!md) throw std::bad_alloc();
  std::size_t len = 0;
  const auto* data = reinterpret_cast<const unsigned char*>(out.data());
  if (EVP_DigestSignInit(md.get(), nullptr, EVP_sha256(), nullptr, key.get()) != 1 ||
      EVP_DigestSign(md.get(), nullptr, &len, data, out.size()) != 1) {
    ERR_clear_error();
    throw Error(sqlstate::kInternalError, "RS256 signature failed for KMS \"" + kms + "\"");
  }
  std::vector<unsigned char> sig(len);
  if (EVP_DigestSign(md.get(), sig.data(), &len, data, out.size()) != 1) {
    ERR_clear_error();
    throw Error(sqlstate::kInternalError, "RS256 signature failed for KMS \"" + kms + "\"");
  }
  sig.resize(len);
  out.push_back('.');
  out.append(base64url_encode(ByteView(sig.data(), sig.size())).view());
  return out;
}

Thumbprints certificate_thumbprints(std::string_view pem, const std::string& kms, const std::string& origin) {
  auto key = read_private_key(pem, kms, origin);
  auto bio = memory_bio(pem);
  if (!bio) throw std::bad_alloc();
  std::unique_ptr<X509, X509Free> cert(PEM_read_bio_X509(bio.get(), nullptr, no_passphrase, nullptr));
  if (!cert) bad_file(kms, origin, "no PEM certificate was found (the file holds the private key and the certificate).");
  EVP_PKEY* pub = X509_get0_pubkey(cert.get());
  if (pub == nullptr || EVP_PKEY_eq(pub, key.get()) != 1)
    bad_file(kms, origin, "the first certificate does not belong to the private key.");
  Thumbprints t;
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (X509_digest(cert.get(), EVP_sha256(), d, &n) != 1) throw Error(sqlstate::kInternalError, "certificate digest failed");
  t.sha256 = std::string(base64url_encode(ByteView(d, n)).view());
  if (X509_digest(cert.get(), EVP_sha1(), d, &n) != 1) throw Error(sqlstate::kInternalError, "certificate digest failed");
  t.sha1 = std::string(base64url_encode(ByteView(d, n)).view());
  return t;
}

std::string random_jti() {
  std::uint8_t r[16];
  random_bytes(r);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (std::uint8_t b : r) {
    s.push_back(kHex[b >> 4]);
    s.push_back(kHex[b & 15]);
  }
  return s;
}

}  // namespace pg_envelope::remote::jwt
