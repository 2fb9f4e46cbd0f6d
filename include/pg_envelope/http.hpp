// HTTP(S) for KMS providers, over libcurl. Pure C++: no PostgreSQL headers. The
// PostgreSQL layer supplies the interrupt check (statement_timeout, pg_cancel_backend)
// and turns an interrupted call back into the pending PostgreSQL error.
//
// Rules: TLS verification always on; plain http only where src/kms/url.hpp allows it
// (loopback addresses, the cloud metadata services), checked when a provider is
// built; connect and per-attempt timeouts; retries with exponential backoff and full
// jitter only for retryable failures, within a total time budget; one reused handle
// per process (so connections are reused); CURLOPT_NOSIGNAL. Request and response
// bodies may hold key material: they live in SecretString and are never logged.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "pg_envelope/secrets.hpp"
#include "pg_envelope/secure_bytes.hpp"

namespace pg_envelope {

struct HttpRequest {
  std::string method = "POST";
  std::string url;
  std::vector<std::string> headers;          // "Name: value"; never secret
  std::vector<SecretString> secret_headers;  // e.g. "X-Vault-Token: ...", "Authorization: Bearer ..."
  SecretString body;
  std::string aws_sigv4;  // e.g. "aws:amz:us-east-1:kms": libcurl signs the request
  SecretString userpwd;   // "ACCESS_KEY:SECRET" for aws_sigv4
};

struct HttpResponse {
  long status = 0;
  SecretString body;
  long retry_after_ms = -1;  // from Retry-After, when present
};

struct HttpOptions {
  long connect_timeout_ms = 5000;
  long attempt_timeout_ms = 10000;
  long total_budget_ms = 30000;  // all attempts and backoff together
  int max_attempts = 5;
  std::string ca_file;  // empty: the system's CA store
  bool ca_file_fixed = false;  // set by a KMS's own "ca_file" option: refresh keeps it
  // Called at the start of every http_call to bring timeouts and the default CA file
  // up to date with the server's current settings (SET/RESET apply to the next call).
  std::function<void(HttpOptions&)> refresh;
  // True when the caller must stop now (query cancel, statement_timeout, shutdown).
  // Called from libcurl's progress callback and while sleeping between attempts;
  // must not throw or longjmp.
  std::function<bool()> interrupted;
};

// How a provider judges a response.
enum class Verdict { kSuccess, kRetry, kFail };

enum class HttpFailure { kNone, kInterrupted, kTimeout, kConnect, kTls, kProtocol, kBudget };

// The outcome of a call: the last response (if any), or why none arrived.
struct HttpResult {
  HttpResponse response;
  HttpFailure failure = HttpFailure::kNone;
  std::string failure_text;  // curl's error text for the last attempt; never secrets
  int attempts = 0;
  long elapsed_ms = 0;
};

// Performs the request with retries. `judge` decides for each HTTP response whether
// it succeeded, is worth retrying (throttling, 5xx) or failed for good. Connection
// errors and attempt timeouts are retried. Never throws for network problems: the
// caller maps HttpResult to an error naming its KMS and operation.
HttpResult http_call(const HttpRequest& request, const HttpOptions& options,
                     const std::function<Verdict(const HttpResponse&)>& judge);

// The delay a response header asks for, in milliseconds, when `line` is a
// "Retry-After: <seconds>" header line (name case-insensitive, optional whitespace,
// trailing CR LF allowed); -1 for any other header and for the HTTP-date form.
// Values are capped at kMaxRetryAfterSeconds. Allocates nothing and never throws:
// libcurl's header callback calls it.
inline constexpr long kMaxRetryAfterSeconds = 24L * 3600;
long parse_retry_after_ms(std::string_view line) noexcept;

// Exposed for tests: the backoff delay (ms) before attempt `attempt` (1-based retry
// count), full jitter in [0, min(cap, base * 2^attempt)).
long backoff_delay_ms(int attempt, std::uint32_t random);

}  // namespace pg_envelope
