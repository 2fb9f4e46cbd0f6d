// The one place PostgreSQL's C headers are included from C++. Files that need the
// PostgreSQL API include this first.
#pragma once

extern "C" {
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
}

#if PG_VERSION_NUM < 130000 || PG_VERSION_NUM >= 180000
#error "pg_envelope supports PostgreSQL 13 to 17"
#endif
