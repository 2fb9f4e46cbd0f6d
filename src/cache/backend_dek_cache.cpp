// Per-backend DEK cache: a hash map from DEK identity to a ready AesGcm, plus the map
// from key name to its current DEK. Bounded; when full, the least recently used entry
// goes (a list in use order; each entry knows the key names it is current for, so an
// eviction is O(1) however many keys the backend has seen).
#include <list>
#include <string>
#include <unordered_map>
#include <vector>

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

// Key names looked up by string_view without a temporary std::string.
struct NameHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

class BackendDekCache final : public DekCache {
 public:
  explicit BackendDekCache(std::size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}

  CachedDek* find(DekId id) noexcept override {
    // The hot path: most scans decrypt many values with the same DEK (it was moved to
    // the front of the use order when it became the last hit).
    if (last_ != nullptr && last_->id == id) return last_;
    auto it = deks_.find(id);
    if (it == deks_.end()) return nullptr;
    use_.splice(use_.begin(), use_, it->second.use);
    last_ = it->second.dek.get();
    return last_;
  }

  CachedDek& insert(DekId id, std::string key_name, const SecureBytes& dek, std::int64_t valid_until) override {
    auto entry = std::make_unique<CachedDek>(id, std::move(key_name), dek.view());
    entry->valid_until = valid_until;
    if (auto it = deks_.find(id); it != deks_.end()) {
      // A refreshed DEK (same identity, new validity): replace the key schedule.
      if (last_ == it->second.dek.get()) last_ = entry.get();
      it->second.dek = std::move(entry);
      use_.splice(use_.begin(), use_, it->second.use);
      return *it->second.dek;
    }
    while (deks_.size() >= capacity_ && !use_.empty()) evict(use_.back());
    use_.push_front(id);
    Entry& e = deks_[id];
    e.dek = std::move(entry);
    e.use = use_.begin();
    return *e.dek;
  }

  CachedDek* find_current(std::string_view key_name) noexcept override {
    auto it = current_.find(key_name);
    return it == current_.end() ? nullptr : find(it->second);
  }

  void set_current(std::string_view key_name, DekId id) override {
    auto entry = deks_.find(id);
    auto it = current_.find(key_name);
    if (it != current_.end()) {
      if (it->second == id && entry != deks_.end()) return;
      forget_current_of(it->second, key_name);
      current_.erase(it);
    }
    if (entry == deks_.end()) return;  // not cached: nothing is current for the name
    current_.emplace(std::string(key_name), id);
    entry->second.current_of.emplace_back(key_name);
  }

  void set_capacity(std::size_t capacity) override {
    capacity_ = capacity == 0 ? 1 : capacity;
    while (deks_.size() > capacity_ && !use_.empty()) evict(use_.back());
  }

  void clear() noexcept override {
    last_ = nullptr;
    current_.clear();
    use_.clear();
    deks_.clear();
  }

  std::size_t size() const noexcept override { return deks_.size(); }

 private:
  struct Entry {
    std::unique_ptr<CachedDek> dek;
    std::list<DekId>::iterator use;
    std::vector<std::string> current_of;  // the key names whose current DEK this is
  };

  void forget_current_of(DekId id, std::string_view key_name) {
    auto e = deks_.find(id);
    if (e == deks_.end()) return;
    auto& names = e->second.current_of;
    for (auto n = names.begin(); n != names.end(); ++n)
      if (*n == key_name) {
        names.erase(n);
        break;
      }
  }

  void evict(DekId id) {
    auto it = deks_.find(id);
    if (it == deks_.end()) return;
    if (last_ == it->second.dek.get()) last_ = nullptr;
    for (const std::string& name : it->second.current_of) current_.erase(name);
    use_.erase(it->second.use);
    deks_.erase(it);
  }

  std::size_t capacity_;
  CachedDek* last_ = nullptr;
  std::unordered_map<DekId, Entry, DekIdHash> deks_;
  std::unordered_map<std::string, DekId, NameHash, std::equal_to<>> current_;
  std::list<DekId> use_;  // front: the most recently used
};

}  // namespace

std::unique_ptr<DekCache> make_backend_dek_cache(std::size_t capacity) {
  return std::make_unique<BackendDekCache>(capacity);
}

}  // namespace pg_envelope
