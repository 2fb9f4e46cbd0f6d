// The per-backend DEK cache (make_backend_dek_cache): lookups, the current-DEK map,
// clearing, the capacity bound, and that a cached entry encrypts with its DEK.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "pg_envelope/crypto.hpp"
#include "pg_envelope/dek_cache.hpp"
#include "test_support.hpp"

namespace pg_envelope {
namespace {

SecureBytes random_dek() {
  SecureBytes k(32);
  random_bytes(k.span());
  return k;
}

TEST(DekCache, InsertAndFind) {
  auto cache = make_backend_dek_cache(8);
  EXPECT_EQ(cache->size(), 0u);
  EXPECT_EQ(cache->find({1, 1}), nullptr);

  SecureBytes k11 = random_dek(), k12 = random_dek(), k21 = random_dek();
  CachedDek& e11 = cache->insert({1, 1}, "ssn", k11);
  CachedDek& e12 = cache->insert({1, 2}, "ssn", k12);
  CachedDek& e21 = cache->insert({2, 1}, "email", k21);
  EXPECT_EQ(cache->size(), 3u);

  EXPECT_EQ(cache->find({1, 1}), &e11);
  EXPECT_EQ(cache->find({1, 2}), &e12);
  EXPECT_EQ(cache->find({2, 1}), &e21);
  EXPECT_EQ(cache->find({1, 1}), &e11);  // again, after other lookups
  EXPECT_EQ(e12.id, (DekId{1, 2}));
  EXPECT_EQ(e21.key_name, "email");
  // key_id and version are not interchangeable.
  EXPECT_EQ(cache->find({2, 2}), nullptr);
  EXPECT_EQ(cache->find({3, 1}), nullptr);
  EXPECT_EQ(cache->find({0, 0}), nullptr);
}

TEST(DekCache, InsertingAnIdTwiceReplacesTheEntry) {
  // A DEK refreshed from the shared cache (new validity, or a key id reused with a
  // different DEK) replaces the old key schedule; one entry stays.
  auto cache = make_backend_dek_cache(8);
  SecureBytes a = random_dek(), b = random_dek();
  cache->insert({5, 1}, "k", a, 100);
  ASSERT_EQ(cache->find({5, 1})->valid_until, 100);  // also primes the last-hit shortcut
  CachedDek& second = cache->insert({5, 1}, "k", b, 200);
  EXPECT_EQ(cache->size(), 1u);
  ASSERT_EQ(cache->find({5, 1}), &second);
  EXPECT_EQ(second.valid_until, 200);
  // The entry now holds b: a value sealed with b opens, one sealed with a does not.
  std::uint8_t nonce[kGcmNonceSize] = {1}, out[4], tag[kGcmTagSize];
  const std::uint8_t msg[4] = {'t', 'e', 's', 't'};
  AesGcm with_b(b.view()), with_a(a.view());
  with_b.seal({nonce, sizeof nonce}, {}, {msg, sizeof msg}, out, tag);
  std::uint8_t plain[4];
  EXPECT_TRUE(second.aead.open({nonce, sizeof nonce}, {}, {out, sizeof out}, tag, plain));
  with_a.seal({nonce, sizeof nonce}, {}, {msg, sizeof msg}, out, tag);
  EXPECT_FALSE(second.aead.open({nonce, sizeof nonce}, {}, {out, sizeof out}, tag, plain));
}

TEST(DekCache, CurrentDek) {
  auto cache = make_backend_dek_cache(8);
  EXPECT_EQ(cache->find_current("ssn"), nullptr);
  SecureBytes k1 = random_dek(), k2 = random_dek();
  CachedDek& v1 = cache->insert({1, 1}, "ssn", k1);
  CachedDek& v2 = cache->insert({1, 2}, "ssn", k2);
  cache->set_current("ssn", {1, 1});
  EXPECT_EQ(cache->find_current("ssn"), &v1);
  cache->set_current("ssn", {1, 2});  // rotation
  EXPECT_EQ(cache->find_current("ssn"), &v2);
  EXPECT_EQ(cache->find_current("SSN"), nullptr);
  EXPECT_EQ(cache->find_current("ssn2"), nullptr);
  // A current DEK that is not cached is not returned.
  cache->set_current("email", {9, 9});
  EXPECT_EQ(cache->find_current("email"), nullptr);
}

TEST(DekCache, ClearEmptiesEverything) {
  auto cache = make_backend_dek_cache(8);
  SecureBytes k = random_dek();
  cache->insert({1, 1}, "ssn", k);
  cache->set_current("ssn", {1, 1});
  ASSERT_NE(cache->find({1, 1}), nullptr);  // also primes any last-hit shortcut
  cache->clear();
  EXPECT_EQ(cache->size(), 0u);
  EXPECT_EQ(cache->find({1, 1}), nullptr);
  EXPECT_EQ(cache->find_current("ssn"), nullptr);
  // Usable after clear.
  CachedDek& again = cache->insert({1, 1}, "ssn", k);
  EXPECT_EQ(cache->find({1, 1}), &again);
}

TEST(DekCache, CapacityIsRespectedAndEvictedEntriesAreGone) {
  constexpr std::size_t kCapacity = 3;
  auto cache = make_backend_dek_cache(kCapacity);
  std::vector<DekId> ids;
  for (std::uint32_t v = 1; v <= 10; ++v) {
    SecureBytes k = random_dek();
    DekId id{4, v};
    // Look the previous entry up first, so a last-hit shortcut points at something
    // that the next insert may evict.
    if (!ids.empty()) {
      ASSERT_NE(cache->find(ids.back()), nullptr);
    }
    cache->insert(id, "k", k);
    ids.push_back(id);
    ASSERT_LE(cache->size(), kCapacity) << "after inserting version " << v;
    EXPECT_NE(cache->find(id), nullptr) << "the entry just inserted is missing";
  }
  EXPECT_EQ(cache->size(), kCapacity);
  std::size_t found = 0;
  for (const DekId& id : ids) {
    CachedDek* e = cache->find(id);
    if (e != nullptr) {
      ++found;
      EXPECT_EQ(e->id, id);
    }
  }
  EXPECT_EQ(found, kCapacity) << "find() returns entries the cache no longer holds";
  // The first-inserted are the ones gone.
  EXPECT_EQ(cache->find(ids.front()), nullptr);
}

TEST(DekCache, EvictedEntryIsNotFoundThroughTheLastHit) {
  auto cache = make_backend_dek_cache(1);
  SecureBytes a = random_dek(), b = random_dek();
  cache->insert({1, 1}, "a", a);
  ASSERT_NE(cache->find({1, 1}), nullptr);
  cache->insert({2, 1}, "b", b);  // evicts {1, 1}
  EXPECT_EQ(cache->size(), 1u);
  EXPECT_EQ(cache->find({1, 1}), nullptr);
  EXPECT_NE(cache->find({2, 1}), nullptr);
}

TEST(DekCache, EvictedCurrentDekIsNoLongerCurrent) {
  auto cache = make_backend_dek_cache(2);
  SecureBytes a = random_dek(), b = random_dek(), c = random_dek();
  cache->insert({1, 1}, "a", a);
  cache->set_current("a", {1, 1});
  cache->insert({2, 1}, "b", b);
  cache->insert({3, 1}, "c", c);  // evicts {1, 1}
  EXPECT_EQ(cache->find_current("a"), nullptr);
  cache->insert({1, 1}, "a", a);
  cache->set_current("a", {1, 1});
  ASSERT_NE(cache->find_current("a"), nullptr);
  EXPECT_EQ(cache->find_current("a")->id, (DekId{1, 1}));
}

TEST(DekCache, EvictsTheLeastRecentlyUsed) {
  auto cache = make_backend_dek_cache(3);
  SecureBytes k = random_dek();
  cache->insert({1, 1}, "a", k);
  cache->insert({2, 1}, "b", k);
  cache->insert({3, 1}, "c", k);
  ASSERT_NE(cache->find({1, 1}), nullptr);  // a is used again: b is now the least recent
  ASSERT_NE(cache->find({3, 1}), nullptr);
  cache->insert({4, 1}, "d", k);
  EXPECT_EQ(cache->find({2, 1}), nullptr);
  EXPECT_NE(cache->find({1, 1}), nullptr);
  EXPECT_NE(cache->find({3, 1}), nullptr);
  EXPECT_NE(cache->find({4, 1}), nullptr);
  // Re-inserting (a refreshed DEK) also counts as a use.
  cache->insert({1, 1}, "a", k);  // use order now (most recent first): a, d, c
  cache->insert({5, 1}, "e", k);  // evicts c
  EXPECT_EQ(cache->size(), 3u);
  EXPECT_EQ(cache->find({3, 1}), nullptr);
  EXPECT_NE(cache->find({1, 1}), nullptr);
}

// The eviction order is least-recent-use to within half the capacity: whatever the
// sequence of uses, an entry used among the last capacity/2 distinct DEKs used (found or
// inserted) is never the one evicted, and the cache stays full.
TEST(DekCache, NeverEvictsOneOfTheRecentHalf) {
  constexpr std::size_t kCapacity = 64;
  auto cache = make_backend_dek_cache(kCapacity);
  SecureBytes k = random_dek();
  std::vector<std::uint32_t> recent;  // distinct ids, most recent use last
  auto used = [&](std::uint32_t id) {
    for (auto it = recent.begin(); it != recent.end(); ++it)
      if (*it == id) {
        recent.erase(it);
        break;
      }
    recent.push_back(id);
  };
  std::uint64_t state = 12345;
  auto next = [&state] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<std::uint32_t>(state >> 33);
  };
  int evictions = 0;
  for (int step = 0; step < 20000; ++step) {
    // Skewed: mostly a hot set of 40 ids, sometimes any of 400.
    std::uint32_t id = 1 + (next() % 4 == 0 ? next() % 400 : next() % 40);
    if (cache->find({id, 1}) != nullptr) {
      used(id);
      continue;
    }
    std::vector<std::uint32_t> protected_ids(recent.end() - std::min(recent.size(), kCapacity / 2), recent.end());
    std::size_t before = cache->size();
    cache->insert({id, 1}, "k" + std::to_string(id), k);
    used(id);
    if (before == kCapacity) {
      ++evictions;
      ASSERT_EQ(cache->size(), kCapacity);
      for (std::uint32_t p : protected_ids) ASSERT_NE(cache->find({p, 1}), nullptr) << "evicted recent id " << p;
      // (find() counts as a use: record it in the model too, in the same order)
      for (std::uint32_t p : protected_ids) used(p);
    }
  }
  EXPECT_GT(evictions, 1000);
}

// Thousands of DEKs through a smaller cache (its index grows, and evictions delete from
// the middle of probe runs): exactly `capacity` are found afterwards, each as itself,
// and the most recent ones among them.
TEST(DekCache, FindsExactlyTheCachedDeksAfterManyEvictions) {
  constexpr std::uint32_t kCapacity = 3000, kIds = 20000;
  auto cache = make_backend_dek_cache(kCapacity);
  SecureBytes k = random_dek();
  for (std::uint32_t i = 1; i <= kIds; ++i) cache->insert({i % 997 + 1, i}, "k" + std::to_string(i), k);
  ASSERT_EQ(cache->size(), kCapacity);
  std::uint32_t found = 0;
  for (std::uint32_t i = 1; i <= kIds; ++i) {
    CachedDek* d = cache->find({i % 997 + 1, i});
    if (d == nullptr) continue;
    ++found;
    EXPECT_EQ(d->id.key_id, i % 997 + 1);
    EXPECT_EQ(d->id.version, i);
    EXPECT_EQ(d->key_name, "k" + std::to_string(i));
    EXPECT_GT(i, kIds - kCapacity) << "an old DEK survived";
  }
  EXPECT_EQ(found, kCapacity);
  cache->clear();
  EXPECT_EQ(cache->find({kIds % 997 + 1, kIds}), nullptr);
  cache->insert({7, 7}, "again", k);
  ASSERT_NE(cache->find({7, 7}), nullptr);
  EXPECT_EQ(cache->find({7, 7})->key_name, "again");
}

TEST(DekCache, SetCapacityShrinksToTheMostRecent) {
  auto cache = make_backend_dek_cache(10);
  SecureBytes k = random_dek();
  for (std::uint32_t i = 1; i <= 10; ++i) cache->insert({i, 1}, "k" + std::to_string(i), k);
  ASSERT_NE(cache->find({2, 1}), nullptr);
  cache->set_capacity(2);
  EXPECT_EQ(cache->size(), 2u);
  EXPECT_NE(cache->find({2, 1}), nullptr);
  EXPECT_NE(cache->find({10, 1}), nullptr);
  cache->set_capacity(0);  // at least one
  EXPECT_EQ(cache->size(), 1u);
}

TEST(DekCache, CurrentFollowsTheNewestSetAndSurvivesEvictionOfTheOld) {
  auto cache = make_backend_dek_cache(2);
  SecureBytes k = random_dek();
  cache->insert({1, 1}, "a", k);
  cache->set_current("a", {1, 1});
  cache->insert({1, 2}, "a", k);  // rotated
  cache->set_current("a", {1, 2});
  ASSERT_NE(cache->find_current("a"), nullptr);
  EXPECT_EQ(cache->find_current("a")->id, (DekId{1, 2}));
  ASSERT_NE(cache->find({1, 2}), nullptr);
  cache->insert({2, 1}, "b", k);  // evicts {1, 1}: "a" stays current at version 2
  EXPECT_EQ(cache->find({1, 1}), nullptr);
  ASSERT_NE(cache->find_current("a"), nullptr);
  EXPECT_EQ(cache->find_current("a")->id, (DekId{1, 2}));
  // A DEK that is not cached cannot become current.
  cache->set_current("c", {9, 9});
  EXPECT_EQ(cache->find_current("c"), nullptr);
  // Many key names through a small cache: every current entry is one the cache holds.
  for (std::uint32_t i = 10; i < 1000; ++i) {
    std::string name = "t" + std::to_string(i);
    cache->insert({i, 1}, name, k);
    cache->set_current(name, {i, 1});
    ASSERT_NE(cache->find_current(name), nullptr);
  }
  EXPECT_EQ(cache->size(), 2u);
  EXPECT_EQ(cache->find_current("t10"), nullptr);
  EXPECT_NE(cache->find_current("t999"), nullptr);
}

TEST(DekCache, EntryAeadUsesItsDek) {
  auto cache = make_backend_dek_cache(4);
  SecureBytes k1 = random_dek(), k2 = random_dek();
  CachedDek& e1 = cache->insert({1, 1}, "one", k1);
  CachedDek& e2 = cache->insert({1, 2}, "one", k2);

  const Bytes nonce(kGcmNonceSize, 0x24);
  const Bytes aad = {1, 2, 3};
  const std::string pt = "123-45-6789";
  Bytes ct(pt.size());
  std::uint8_t tag[kGcmTagSize];
  e1.aead.seal(nonce, aad, as_bytes(pt), ct.data(), tag);

  // The same entry opens it, and so does an independent AesGcm over the same DEK
  // (the cache holds that DEK, not some other key).
  Bytes out(pt.size());
  ASSERT_TRUE(e1.aead.open(nonce, aad, ct, tag, out.data()));
  EXPECT_EQ(std::string(out.begin(), out.end()), pt);
  AesGcm independent(k1.view());
  ASSERT_TRUE(independent.open(nonce, aad, ct, tag, out.data()));
  EXPECT_EQ(std::string(out.begin(), out.end()), pt);

  // Another DEK's entry does not.
  EXPECT_FALSE(e2.aead.open(nonce, aad, ct, tag, out.data()));
}

TEST(DekCache, InsertDoesNotKeepTheCallersBuffer) {
  auto cache = make_backend_dek_cache(2);
  SecureBytes k = random_dek();
  const Bytes copy(k.data(), k.data() + k.size());
  CachedDek& e = cache->insert({1, 1}, "k", k);
  k.wipe();  // the caller drops its copy of the DEK

  const Bytes nonce(kGcmNonceSize, 1);
  const Bytes pt = {9, 8, 7};
  Bytes ct(pt.size());
  std::uint8_t tag[kGcmTagSize];
  e.aead.seal(nonce, {}, pt, ct.data(), tag);
  AesGcm independent(copy);
  Bytes out(pt.size());
  ASSERT_TRUE(independent.open(nonce, {}, ct, tag, out.data()));
  EXPECT_EQ(out, pt);
}

}  // namespace
}  // namespace pg_envelope
