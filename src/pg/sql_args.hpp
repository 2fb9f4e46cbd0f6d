// Argument and context checks shared by the SQL-callable functions.
#pragma once

#include "pg_includes.hpp"

#include <string>

namespace pg_envelope {

// A text argument as a string; Error 22004 naming `what` when it is NULL.
std::string text_arg(FunctionCallInfo fcinfo, int n, const char* what);

// A jsonb argument in its canonical text form ("{}" when NULL).
std::string jsonb_arg(FunctionCallInfo fcinfo, int n);

// Key and KMS changes write the key tables: Error 25006 on a standby (the change is
// made on the primary and replicated) and in a read-only transaction. `what` is the
// action, e.g. "rotate a key".
void require_writable(const char* what);

}  // namespace pg_envelope
