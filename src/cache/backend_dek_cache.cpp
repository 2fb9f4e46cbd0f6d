// Per-backend DEK cache: a hash map from DEK identity to a ready DEK (PooledAesGcm), plus the map
// from key name to its current DEK. Bounded; when full, the least recently used entry
// goes (a list in use order; each entry knows the key names it is current for, so an
// eviction is O(1) however many keys the backend has seen). A use moves its entry to
// the front of the list only when the entry is not among the most recently moved half
// of the capacity: with many keys in random order, most hits then touch no list node
// (each move writes three entries' links, a CPU cache miss each), and the eviction
// order stays that of least recent use to within half the capacity.
#include <list>
#include <string>
#include <unordered_map>
#include <vector>

#include "pg_envelope/dek_cache.hpp"

namespace pg_envelope {

CachedDek::CachedDek(DekId id_, std::string key_name_, ByteView key)
    : id(id_), aead(key), key_name(std::move(key_name_)), blind_seed(32) {
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

// An open-addressing index (linear probing, at most half full) from DEK identity to
// the cached DEK and its entry: a hit reads one slot, where a node-based map reads a
// bucket and one or two nodes, each a CPU cache miss once the backend holds thousands
// of DEKs.
template <class EntryT>
class FlatIndex {
 public:
  struct Slot {
    std::uint64_t key;
    CachedDek* dek;  // nullptr: free
    EntryT* entry;
  };

  const Slot* find(DekId id) const noexcept {
    if (slots_.empty()) return nullptr;
    std::uint64_t k = key_of(id);
    for (std::size_t i = home(k);; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.dek == nullptr) return nullptr;
      if (s.key == k) return &s;
    }
  }

  // Adds or updates the slot of `id`.
  void put(DekId id, CachedDek* dek, EntryT* entry) {
    if ((size_ + 1) * 2 > slots_.size()) grow();
    std::uint64_t k = key_of(id);
    std::size_t i = home(k);
    while (slots_[i].dek != nullptr && slots_[i].key != k) i = (i + 1) & mask_;
    if (slots_[i].dek == nullptr) ++size_;
    slots_[i] = Slot{k, dek, entry};
  }

  void erase(DekId id) noexcept {
    if (slots_.empty()) return;
    std::uint64_t k = key_of(id);
    std::size_t i = home(k);
    while (slots_[i].dek != nullptr && slots_[i].key != k) i = (i + 1) & mask_;
    if (slots_[i].dek == nullptr) return;
    // Backward-shift deletion: move up every later slot of the run whose home is not
    // between the hole and it, so no probe sequence is cut.
    for (std::size_t j = (i + 1) & mask_; slots_[j].dek != nullptr; j = (j + 1) & mask_) {
      std::size_t h = home(slots_[j].key);
      bool stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
      if (!stays) {
        slots_[i] = slots_[j];
        i = j;
      }
    }
    slots_[i] = Slot{0, nullptr, nullptr};
    --size_;
  }

  void clear() noexcept {
    slots_.clear();
    mask_ = 0;
    size_ = 0;
  }

 private:
  static std::uint64_t key_of(DekId id) noexcept { return (std::uint64_t{id.key_id} << 32) | id.version; }

  std::size_t home(std::uint64_t k) const noexcept {
    k ^= k >> 33;
    k *= 0xFF51AFD7ED558CCDull;
    k ^= k >> 33;
    return static_cast<std::size_t>(k) & mask_;
  }

  void grow() {
    std::vector<Slot> old;
    old.swap(slots_);
    std::size_t n = old.empty() ? 64 : old.size() * 2;
    slots_.assign(n, Slot{0, nullptr, nullptr});
    mask_ = n - 1;
    size_ = 0;
    for (const Slot& s : old)
      if (s.dek != nullptr) {
        std::size_t i = home(s.key);
        while (slots_[i].dek != nullptr) i = (i + 1) & mask_;
        slots_[i] = s;
        ++size_;
      }
  }

  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
  std::size_t size_ = 0;
};

class BackendDekCache final : public DekCache {
 public:
  explicit BackendDekCache(std::size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}

  CachedDek* find(DekId id) noexcept override {
    // The hot path: most scans decrypt many values with the same DEK (it was moved to
    // the front of the use order when it became the last hit).
    if (last_ != nullptr && last_->id == id) return last_;
    const auto* slot = index_.find(id);
    if (slot == nullptr) return nullptr;
    if (moves_ - slot->dek->moved_at >= capacity_ / 2) move_to_front(*slot->entry);
    last_ = slot->dek;
    return last_;
  }

  CachedDek& insert(DekId id, std::string key_name, const SecureBytes& dek, std::int64_t valid_until) override {
    auto entry = std::make_unique<CachedDek>(id, std::move(key_name), dek.view());
    entry->valid_until = valid_until;
    if (auto it = deks_.find(id); it != deks_.end()) {
      // A refreshed DEK (same identity, new validity): replace the key schedule.
      if (last_ == it->second.dek.get()) last_ = entry.get();
      it->second.dek = std::move(entry);
      index_.put(id, it->second.dek.get(), &it->second);
      move_to_front(it->second);
      return *it->second.dek;
    }
    while (deks_.size() >= capacity_ && !use_.empty()) evict(use_.back());
    use_.push_front(id);
    Entry& e = deks_[id];  // unordered_map: the entry's address stays valid until it is erased
    e.dek = std::move(entry);
    e.use = use_.begin();
    e.dek->moved_at = ++moves_;
    index_.put(id, e.dek.get(), &e);
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
    index_.clear();
    deks_.clear();
  }

  std::size_t size() const noexcept override { return deks_.size(); }

 private:
  struct Entry {
    std::unique_ptr<CachedDek> dek;
    std::list<DekId>::iterator use;
    std::vector<std::string> current_of;  // the key names whose current DEK this is
  };

  // A use (find) moves an entry to the front unless fewer than half the capacity's
  // moves (and inserts) were made since its last one: it is still in the front half.
  void move_to_front(Entry& e) {
    use_.splice(use_.begin(), use_, e.use);
    e.dek->moved_at = ++moves_;
  }

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
    index_.erase(id);
    deks_.erase(it);
  }

  std::size_t capacity_;
  CachedDek* last_ = nullptr;
  std::unordered_map<DekId, Entry, DekIdHash> deks_;
  FlatIndex<Entry> index_;  // the same entries, for find()
  std::unordered_map<std::string, DekId, NameHash, std::equal_to<>> current_;
  std::list<DekId> use_;  // front: the most recently used
  std::uint64_t moves_ = 0;
};

}  // namespace

std::unique_ptr<DekCache> make_backend_dek_cache(std::size_t capacity) {
  return std::make_unique<BackendDekCache>(capacity);
}

}  // namespace pg_envelope
