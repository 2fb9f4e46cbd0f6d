// Error text that comes from a KMS or an instance-metadata service, made safe to put
// into a pg_envelope error (message, detail): such text is chosen by the server, may
// be long or hold control characters, and may quote the request, which carries key
// material. Every remote provider passes service text through one of these rules.
// Pure C++.
#pragma once

#include <string>
#include <string_view>

namespace pg_envelope::remote {

// The rule of GCP Cloud KMS, Azure Key Vault, the metadata services and any text
// that may quote input: at most 200 characters, printable ASCII only, every
// double-quoted span replaced by "...", since services quote the offending input
// there (which may be key material), and no final period (the caller embeds it).
std::string safe_message(std::string_view text);

namespace vault {

// The rule of Vault's "errors" (kept as it was, since docs/kms.md quotes Vault's
// messages as they arrive): the first 200 bytes, cut at a character boundary (the
// JSON parser checked the UTF-8), with each run of white space and control characters
// (Vault's multi-error format puts newlines and tabs in it) made one space, none at
// the ends.
std::string error_text(std::string_view message);

}  // namespace vault

}  // namespace pg_envelope::remote
