// Per-backend DEK cache: a hash map from DEK identity to a ready AesGcm, plus the map
// from key name to its current DEK. Bounded; when full, the least recently inserted
// entry goes (cheap, and a miss costs one key-table read plus one unwrap).
#include <deque>
#include <string>
#include <unordered_map>

#include "pg_envelope/dek_cache.hpp"

namespace pg_envelope {

CachedDek::CachedDek(DekId id_, std::string key_name_, ByteView key)
    : id(id_), key_name(std::move(key_name_)), aead(key), blind_seed(32) {
  static constexpr std::string_view kLabel = "pg_envelope blind index seed v1";
  hkdf_sha256(key, {}, as_bytes(kLabel), blind_seed.span());
}

namespace {

struct DekIdHash {
  std::size_t operator()(const DekId& id) const noexcept {
    return std::hash<std::uint64_t>{}((std::uint64_t{id.key_id} << 32) | id.version);
  }
};

class BackendDekCache final : public DekCache {
 public:
  explicit BackendDekCache(std::size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}

  CachedDek* find(DekId id) noexcept override {
    // The hot path: most scans decrypt many values with the same DEK.
    if (last_ != nullptr && last_->id == id) return last_;
    auto it = deks_.find(id);
    if (it == deks_.end()) return nullptr;
    last_ = it->second.get();
    return last_;
  }

  CachedDek& insert(DekId id, std::string key_name, const SecureBytes& dek, std::int64_t valid_until) override {
    if (auto it = deks_.find(id); it != deks_.end()) {
      // A refreshed DEK (same identity, new validity): replace the key schedule.
      auto entry = std::make_unique<CachedDek>(id, std::move(key_name), dek.view());
      entry->valid_until = valid_until;
      if (last_ == it->second.get()) last_ = entry.get();
      it->second = std::move(entry);
      return *it->second;
    }
    while (deks_.size() >= capacity_ && !order_.empty()) {
      evict(order_.front());
      order_.pop_front();
    }
    auto entry = std::make_unique<CachedDek>(id, std::move(key_name), dek.view());
    entry->valid_until = valid_until;
    CachedDek& ref = *entry;
    deks_.emplace(id, std::move(entry));
    order_.push_back(id);
    return ref;
  }

  CachedDek* find_current(std::string_view key_name) noexcept override {
    auto it = current_.find(std::string(key_name));
    return it == current_.end() ? nullptr : find(it->second);
  }

  void set_current(std::string_view key_name, DekId id) override { current_[std::string(key_name)] = id; }

  void clear() noexcept override {
    last_ = nullptr;
    current_.clear();
    order_.clear();
    deks_.clear();
  }

  std::size_t size() const noexcept override { return deks_.size(); }

 private:
  void evict(DekId id) {
    if (last_ != nullptr && last_->id == id) last_ = nullptr;
    deks_.erase(id);
    for (auto it = current_.begin(); it != current_.end();) {
      if (it->second == id) it = current_.erase(it);
      else ++it;
    }
  }

  std::size_t capacity_;
  CachedDek* last_ = nullptr;
  std::unordered_map<DekId, std::unique_ptr<CachedDek>, DekIdHash> deks_;
  std::unordered_map<std::string, DekId> current_;
  std::deque<DekId> order_;
};

}  // namespace

std::unique_ptr<DekCache> make_backend_dek_cache(std::size_t capacity) {
  return std::make_unique<BackendDekCache>(capacity);
}

}  // namespace pg_envelope
