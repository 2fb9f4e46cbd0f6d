// The KMS side of the server-wide credential store (pg_envelope/credential_store.hpp):
// the value encoding, and the AWS credential provider sharing its temporary
// credentials through a store (an in-process stand-in for the shared-memory one, which
// the integration tests cover: test/integration/test_shared_credentials.py).
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <string>

#include "kms/aws_credential_chain.hpp"
#include "kms/credential_codec.hpp"
#include "pg_envelope/credential_store.hpp"
#include "pg_envelope/error.hpp"
#include "test_support.hpp"

namespace pg_envelope::remote {
namespace {

TEST(CredentialCodec, RoundTripsSecretsAndIntegers) {
  SecureBytes v = CredentialWriter(kAwsCredentialKind).secret("AKIA").secret("").secret("tok\0en").integer(-5).finish();
  CredentialReader r(v.view(), kAwsCredentialKind);
  SecretString a, b, c;
  std::int64_t n = 0;
  ASSERT_TRUE(r.secret(a) && r.secret(b) && r.secret(c) && r.integer(n));
  EXPECT_TRUE(r.done());
  EXPECT_EQ(a.view(), "AKIA");
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(c.view(), "tok");  // a C string literal: up to its NUL
  EXPECT_EQ(n, -5);
}

TEST(CredentialCodec, RefusesOtherKindsTruncationAndTrailingBytes) {
  SecureBytes v = CredentialWriter(kVaultTokenKind).secret("hvs.x").integer(7).finish();
  SecretString s;
  std::int64_t n = 0;
  CredentialReader other(v.view(), kAwsCredentialKind);
  EXPECT_FALSE(other.secret(s));
  for (std::size_t cut = 0; cut < v.size(); ++cut) {
    CredentialReader r(ByteView(v.data(), cut), kVaultTokenKind);
    EXPECT_FALSE(r.secret(s) && r.integer(n) && r.done()) << cut;
  }
  CredentialReader more(v.view(), kVaultTokenKind);
  ASSERT_TRUE(more.secret(s));
  EXPECT_FALSE(more.done());  // the integer is left
  SecureBytes huge = CredentialWriter(kVaultTokenKind).secret("abc").finish();
  huge.data()[2] = 0xff;  // a length far beyond the value
  CredentialReader h(huge.view(), kVaultTokenKind);
  EXPECT_FALSE(h.secret(s));
}

}  // namespace

namespace aws {
namespace {

constexpr std::int64_t kSecond = 1000000;

// A store in one process: a fresh value is served, else `fetch` runs; a failed refresh
// keeps a still valid value in service.
class FakeStore final : public CredentialStore {
 public:
  explicit FakeStore(std::function<std::int64_t()> now) : now_(std::move(now)) {}

  StoredCredential get(std::string_view identity, const Fetch& fetch) override {
    auto it = slots_.find(std::string(identity));
    std::int64_t now = now_();
    if (it != slots_.end() && now < it->second.refresh_at_us) return copy(it->second);
    const SecureBytes* previous =
        it != slots_.end() && (it->second.expires_at_us == 0 || now < it->second.expires_at_us) ? &it->second.value
                                                                                                : nullptr;
    ++fetches;
    try {
      StoredCredential got = fetch(previous);
      if (got.shareable) slots_[std::string(identity)] = copy(got);
      return got;
    } catch (const Error&) {
      if (previous) return copy(slots_[std::string(identity)]);
      throw;
    }
  }

  bool invalidate(std::string_view identity, ByteView value) override {
    auto it = slots_.find(std::string(identity));
    if (it == slots_.end() || !std::equal(value.begin(), value.end(), it->second.value.data(),
                                          it->second.value.data() + it->second.value.size()))
      return false;
    slots_.erase(it);
    ++invalidations;
    return true;
  }

  std::size_t size() const { return slots_.size(); }
  int fetches = 0, invalidations = 0;

 private:
  static StoredCredential copy(const StoredCredential& c) {
    StoredCredential out;
    out.value = SecureBytes(c.value.data(), c.value.size());
    out.refresh_at_us = c.refresh_at_us;
    out.expires_at_us = c.expires_at_us;
    out.shareable = c.shareable;
    return out;
  }
  std::function<std::int64_t()> now_;
  std::map<std::string, StoredCredential> slots_;
};

class CountingSource final : public CredentialSource {
 public:
  CountingSource(std::string key, std::int64_t lifetime, int* calls, std::function<std::int64_t()> now,
                 bool* broken = nullptr)
      : key_(std::move(key)), lifetime_(lifetime), calls_(calls), now_(std::move(now)), broken_(broken) {}
  const char* name() const noexcept override { return "counting"; }
  std::optional<Credentials> fetch(const KmsContext&, std::string&) override {
    ++*calls_;
    if (broken_ && *broken_) throw Error("58000", "metadata service unavailable");
    Credentials c;
    c.access_key = SecretString(key_ + std::to_string(*calls_));
    c.secret_key = SecretString("secret");
    c.session_token = SecretString("session-token");
    c.expires_at_us = lifetime_ ? now_() + lifetime_ : 0;
    c.source = "the counting source";
    return c;
  }

 private:
  std::string key_;
  std::int64_t lifetime_;
  int* calls_;
  std::function<std::int64_t()> now_;
  bool* broken_;
};

struct Backends {
  std::int64_t now = 1000 * kSecond;
  int calls = 0;
  bool broken = false;
  std::shared_ptr<FakeStore> store = std::make_shared<FakeStore>([this] { return now; });
  KmsContext ctx;
  Backends() { ctx.credentials = store; }
  // A provider as a new backend builds it.
  CredentialProvider backend(std::int64_t lifetime = 3600 * kSecond, ChainConfig cfg = {}) {
    cfg.kms = "aws1";
    std::vector<std::unique_ptr<CredentialSource>> s;
    s.push_back(std::make_unique<CountingSource>("ASIA", lifetime, &calls, [this] { return now; }, &broken));
    return CredentialProvider(std::move(cfg), std::move(s), [this] { return now; });
  }
};

TEST(SharedAwsCredentials, ManyBackendsFetchOncePerLifetime) {
  Backends b;
  for (int i = 0; i < 200; ++i) {
    CredentialProvider p = b.backend();
    Credentials c = p.get(b.ctx);
    EXPECT_EQ(c.access_key.view(), "ASIA1");
    EXPECT_EQ(c.secret_key.view(), "secret");
    EXPECT_EQ(c.session_token.view(), "session-token");
    EXPECT_EQ(c.source, "the counting source");
    EXPECT_EQ(c.expires_at_us, 4600 * kSecond);
  }
  EXPECT_EQ(b.calls, 1);
  // Shortly before they expire, the first backend to ask refreshes them for all.
  CredentialProvider p = b.backend(), q = b.backend();
  EXPECT_EQ(p.get(b.ctx).access_key.view(), "ASIA1");
  b.now += 3301 * kSecond;
  EXPECT_EQ(p.get(b.ctx).access_key.view(), "ASIA2");
  EXPECT_EQ(q.get(b.ctx).access_key.view(), "ASIA2");
  EXPECT_EQ(b.calls, 2);
}

TEST(SharedAwsCredentials, StaticCredentialsAreNotShared) {
  Backends b;
  CredentialProvider p = b.backend(0);
  EXPECT_EQ(p.get(b.ctx).access_key.view(), "ASIA1");
  EXPECT_EQ(p.get(b.ctx).access_key.view(), "ASIA2");  // read again every call
  EXPECT_EQ(b.store->size(), 0u);
  EXPECT_EQ(b.store->fetches, 1);  // the backend learnt that they are static
}

TEST(SharedAwsCredentials, RoleCredentialsHaveTheirOwnIdentity) {
  Backends b;
  CredentialProvider p = b.backend();
  ChainConfig with_role;
  with_role.kms = "aws1";
  with_role.role.role_arn = "arn:aws:iam::123456789012:role/r";
  CredentialProvider r(with_role, {}, [] { return 0; });
  KmsContext env;
  env.getenv = [](const char* n) -> const char* {
    return std::string_view(n) == "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" ? "/v2/creds" : nullptr;
  };
  EXPECT_EQ(p.base_identity(b.ctx), r.base_identity(b.ctx));  // the same chain
  EXPECT_NE(r.base_identity(b.ctx), r.role_identity(b.ctx));
  EXPECT_NE(r.base_identity(b.ctx), r.base_identity(env));  // where the chain fetches from
  EXPECT_EQ(r.role_identity(b.ctx).find("secret"), std::string::npos);
}

TEST(SharedAwsCredentials, InvalidateDropsTheStoredValueOnce) {
  Backends b;
  CredentialProvider p = b.backend(), q = b.backend();
  EXPECT_EQ(p.get(b.ctx).access_key.view(), "ASIA1");
  EXPECT_EQ(q.get(b.ctx).access_key.view(), "ASIA1");
  // Both backends are refused the same credentials: the first drops them, the second's
  // invalidate drops nothing new (the store already holds the next ones).
  EXPECT_TRUE(p.invalidate(b.ctx));
  EXPECT_EQ(p.get(b.ctx).access_key.view(), "ASIA2");
  EXPECT_TRUE(q.invalidate(b.ctx));
  EXPECT_EQ(q.get(b.ctx).access_key.view(), "ASIA2");
  EXPECT_EQ(b.calls, 2);
  EXPECT_EQ(b.store->invalidations, 1);
}

TEST(SharedAwsCredentials, FailedRefreshServesTheValidValue) {
  Backends b;
  CredentialProvider p = b.backend();
  EXPECT_EQ(p.get(b.ctx).access_key.view(), "ASIA1");
  b.now += 3400 * kSecond;  // due for a refresh, still valid
  b.broken = true;
  EXPECT_EQ(p.get(b.ctx).access_key.view(), "ASIA1");
  b.now += 300 * kSecond;  // expired
  auto e = test::catch_error([&] { p.get(b.ctx); });
  ASSERT_TRUE(e.has_value());
  EXPECT_STREQ(e->sqlstate(), "58000");
}

}  // namespace
}  // namespace aws
}  // namespace pg_envelope::remote
