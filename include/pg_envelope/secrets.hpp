// Text secrets: tokens, credentials, request and response bodies that carry key
// material. Pure C++: no PostgreSQL headers.
//
// SecretString keeps its characters only in heap memory obtained through
// ZeroingAllocator, so every buffer it ever used is wiped when it is released: on
// growth, on move, on wipe() and on destruction. Unlike std::basic_string it has no
// small-string buffer inside the object, so a short secret never stays behind in an
// object (on the stack, in a container node) after the string grew or went away.
// Never put a secret into std::string, std::ostringstream or a plain std::vector.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

#include "pg_envelope/secure_bytes.hpp"

namespace pg_envelope {

class SecretString {
 public:
  SecretString() noexcept = default;
  explicit SecretString(std::string_view s) { append(s); }
  SecretString(const SecretString&) = delete;
  SecretString& operator=(const SecretString&) = delete;
  // A move hands the buffer over: nothing is copied, the source is left empty.
  SecretString(SecretString&& o) noexcept : buf_(std::move(o.buf_)) { o.buf_.clear(); }
  SecretString& operator=(SecretString&& o) noexcept {
    if (this != &o) {
      wipe();
      buf_ = std::move(o.buf_);  // the old buffer is released (and wiped) by the allocator
      o.buf_.clear();
    }
    return *this;
  }
  ~SecretString() { wipe(); }

  // Appends; may throw std::bad_alloc, leaving the contents unchanged.
  void append(std::string_view v) { append(v.data(), v.size()); }
  void append(const char* p, std::size_t n) {
    if (n == 0) return;
    std::size_t len = size();
    std::size_t need = len + n + 1;  // + the terminating NUL
    if (need > buf_.capacity()) buf_.reserve(need < 2 * buf_.capacity() ? 2 * buf_.capacity() : need);
    // From here on nothing allocates, so nothing can throw halfway.
    if (!buf_.empty()) buf_.pop_back();
    buf_.insert(buf_.end(), p, p + n);
    buf_.push_back('\0');
  }
  void push_back(char c) { append(&c, 1); }
  void reserve(std::size_t n) {
    if (n + 1 > buf_.capacity()) buf_.reserve(n + 1);
  }

  const char* data() const noexcept { return buf_.empty() ? "" : buf_.data(); }  // NUL-terminated
  const char* c_str() const noexcept { return data(); }
  std::size_t size() const noexcept { return buf_.empty() ? 0 : buf_.size() - 1; }
  bool empty() const noexcept { return size() == 0; }
  std::string_view view() const noexcept { return {data(), size()}; }

  // Zeroes the whole buffer (its capacity, not only the characters in use) and
  // empties the string; the buffer is kept for reuse.
  void wipe() noexcept {
    secure_zero(buf_.data(), buf_.capacity());
    buf_.clear();
  }

 private:
  std::vector<char, ZeroingAllocator<char>> buf_;  // characters + '\0', or empty
};

}  // namespace pg_envelope
