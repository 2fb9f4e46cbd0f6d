// Masking of secrets in shared memory (see shmem_mask.hpp). No PostgreSQL calls: the
// functions run in the postmaster's set-up and in backends alike.
#include "shmem_mask.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "pg_envelope/crypto.hpp"

namespace pg_envelope::shmem_mask {

namespace {

std::uint8_t secret[32];
bool ready = false;
// HKDF of the secret with the extract step done and the HMAC keyed once, in the
// postmaster: a backend's derivation is one HMAC, without OpenSSL algorithm fetches.
// Never freed (it lives as long as the secret, for the life of the process).
HkdfSha256* keyed = nullptr;

constexpr std::size_t kBlock = 255 * 32;  // HKDF-SHA256's longest output

}  // namespace

void init() {
  if (ready) return;
  random_bytes({secret, sizeof secret});
  keyed = new HkdfSha256({secret, sizeof secret}, {});
  ready = true;
}

void derive(ByteView info, std::span<std::uint8_t> out) {
  if (out.size() <= kBlock) {  // the common case (and the DEK cache's exact derivation)
    if (keyed != nullptr)
      keyed->expand(info, out);
    else
      hkdf_sha256({secret, sizeof secret}, {}, info, out);
    return;
  }
  std::vector<std::uint8_t, ZeroingAllocator<std::uint8_t>> block_info(info.begin(), info.end());
  block_info.push_back(0);
  for (std::size_t off = 0, n = 0; off < out.size(); off += kBlock, ++n) {
    block_info.back() = static_cast<std::uint8_t>(n);
    hkdf_sha256({secret, sizeof secret}, {}, {block_info.data(), block_info.size()},
                out.subspan(off, std::min(kBlock, out.size() - off)));
  }
}

void apply(ByteView info, std::span<std::uint8_t> data) {
  SecureBytes mask(data.size());
  derive(info, mask.span());
  for (std::size_t i = 0; i < data.size(); ++i) data[i] ^= mask.data()[i];
}

int exclude_from_core_dumps(void* first_page, std::size_t bytes) noexcept {
  return madvise(first_page, bytes, MADV_DONTDUMP) == 0 ? 0 : errno;
}

}  // namespace pg_envelope::shmem_mask
