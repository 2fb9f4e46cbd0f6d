# PGXS build of pg_envelope (C++20). `make && make install`; tests: scripts/test.sh
EXTENSION = pg_envelope
MODULE_big = pg_envelope
DATA = extension/pg_envelope--0.1.0.sql
PGFILEDESC = "pg_envelope - column-level envelope encryption"

SRCS = $(sort $(wildcard src/*.cpp src/*/*.cpp))
OBJS = $(SRCS:.cpp=.o)

PG_CPPFLAGS = -Iinclude -Isrc
PG_CXXFLAGS = -std=c++20 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-register
SHLIB_LINK = -lcurl -lssl -lcrypto -lstdc++

# No LLVM bitcode for JIT inlining: it needs clang, and our code is not inlinable SQL.
override with_llvm = no
# Rebuild objects when a header they include changes.
override autodepend = yes

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
