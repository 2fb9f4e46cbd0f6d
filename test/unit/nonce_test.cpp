// random_nonce(): batched CSPRNG nonces must never repeat, within a process or
// across a fork (a forked PostgreSQL backend must not reuse its parent's batch).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <set>

#include "pg_envelope/crypto.hpp"

namespace pg_envelope {
namespace {

using Nonce = std::array<std::uint8_t, kGcmNonceSize>;

Nonce next_nonce() {
  Nonce n;
  random_nonce(n.data());
  return n;
}

TEST(Nonce, NoRepeatsAcrossManyBatches) {
  std::set<Nonce> seen;
  for (int i = 0; i < 100000; ++i) ASSERT_TRUE(seen.insert(next_nonce()).second) << "repeat at " << i;
  // 100000 nonces span ~293 refills of the 341-nonce batch.
  EXPECT_EQ(seen.size(), 100000u);
}

TEST(Nonce, NotAllZero) {
  // A batch slot is wiped after use; a handed-out nonce must never be that wiped slot.
  Nonce zero{};
  for (int i = 0; i < 2000; ++i) ASSERT_NE(next_nonce(), zero);
}

TEST(Nonce, ForkedChildDoesNotReuseParentBatch) {
  next_nonce();  // the parent now holds a partly used batch
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    for (int i = 0; i < 400; ++i) {
      Nonce n = next_nonce();
      if (write(fds[1], n.data(), n.size()) != static_cast<ssize_t>(n.size())) _exit(2);
    }
    _exit(0);
  }
  close(fds[1]);
  std::set<Nonce> child;
  Nonce n;
  while (read(fds[0], n.data(), n.size()) == static_cast<ssize_t>(n.size())) child.insert(n);
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(child.size(), 400u);
  // What the parent hands out next (rest of its batch and beyond) never appears in the child.
  for (int i = 0; i < 400; ++i) EXPECT_EQ(child.count(next_nonce()), 0u) << "nonce shared with child at " << i;
}

}  // namespace
}  // namespace pg_envelope
