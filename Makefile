# PGXS build of pg_envelope (C++20). `make && make install`; tests: scripts/test.sh
EXTENSION = pg_envelope
MODULE_big = pg_envelope
DATA = $(wildcard extension/pg_envelope--*.sql)
PGFILEDESC = "pg_envelope - column-level envelope encryption"

# `make installcheck` against a running server that preloads pg_envelope with a master
# key (see scripts/regress.sh); each suite creates what it needs and drops it again.
# (sql/not_preloaded.sql needs a server without the preload: scripts/regress.sh.)
REGRESS = types encrypt_decrypt keys privileges encoding kms protect classify

SRCS = $(sort $(wildcard src/*.cpp src/*/*.cpp))
OBJS = $(SRCS:.cpp=.o)

# PostgreSQL's headers as system headers: their own warnings (C idioms such as
# `register` and unused parameters) are not ours; ours build clean with -Wall -Wextra.
PG_CPPFLAGS = -Iinclude -Isrc -isystem $(shell $(PG_CONFIG) --includedir-server)
# scripts/setup.sh sets PG_ENVELOPE_WERROR=-Werror in CI (CI=true): a warning fails the build.
PG_CXXFLAGS = -std=c++20 -Wall -Wextra $(PG_ENVELOPE_WERROR)
SHLIB_LINK = -lcurl -lssl -lcrypto -lstdc++

# No LLVM bitcode for JIT inlining: it needs clang, and our code is not inlinable SQL.
override with_llvm = no
# Rebuild objects when a header they include changes.
override autodepend = yes

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

.PHONY: print-regress
print-regress:
	@echo $(REGRESS)
