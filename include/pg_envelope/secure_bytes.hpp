// Byte buffers for secrets: DEKs, KEKs, the master key, plaintext staging.
//
// SecureBytes zeroes its storage (OPENSSL_cleanse, which the compiler may not elide)
// whenever memory is released: on destruction, on resize and on move-from. It is
// move-only so a secret is never copied by accident. Never put a secret into a
// std::string.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace pg_envelope {

void secure_zero(void* p, std::size_t n) noexcept;

// Allocator whose deallocate() wipes the block first, so vector growth never leaves
// a stale copy of a secret behind.
template <typename T>
struct ZeroingAllocator {
  using value_type = T;
  ZeroingAllocator() noexcept = default;
  template <typename U>
  ZeroingAllocator(const ZeroingAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return std::allocator<T>{}.allocate(n); }
  void deallocate(T* p, std::size_t n) noexcept {
    secure_zero(p, n * sizeof(T));
    std::allocator<T>{}.deallocate(p, n);
  }
  template <typename U>
  bool operator==(const ZeroingAllocator<U>&) const noexcept { return true; }
  template <typename U>
  bool operator!=(const ZeroingAllocator<U>&) const noexcept { return false; }
};

class SecureBytes {
 public:
  SecureBytes() = default;
  explicit SecureBytes(std::size_t n) : bytes_(n) {}
  SecureBytes(const std::uint8_t* p, std::size_t n) : bytes_(p, p + n) {}
  SecureBytes(const SecureBytes&) = delete;
  SecureBytes& operator=(const SecureBytes&) = delete;
  SecureBytes(SecureBytes&& o) noexcept : bytes_(std::move(o.bytes_)) { o.bytes_.clear(); }
  SecureBytes& operator=(SecureBytes&& o) noexcept {
    if (this != &o) {
      wipe();
      bytes_ = std::move(o.bytes_);
      o.bytes_.clear();
    }
    return *this;
  }
  ~SecureBytes() { wipe(); }

  std::uint8_t* data() noexcept { return bytes_.data(); }
  const std::uint8_t* data() const noexcept { return bytes_.data(); }
  std::size_t size() const noexcept { return bytes_.size(); }
  bool empty() const noexcept { return bytes_.empty(); }
  std::span<const std::uint8_t> view() const noexcept { return {bytes_.data(), bytes_.size()}; }
  std::span<std::uint8_t> span() noexcept { return {bytes_.data(), bytes_.size()}; }

  // Zero the contents and release them.
  void wipe() noexcept {
    secure_zero(bytes_.data(), bytes_.size());
    bytes_.clear();
  }

 private:
  std::vector<std::uint8_t, ZeroingAllocator<std::uint8_t>> bytes_;
};

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;

}  // namespace pg_envelope
