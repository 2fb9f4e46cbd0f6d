// The settings of KMS calls: envelope.kms_connect_timeout, kms_request_timeout,
// kms_retry_budget and kms_ca_file, read at every call, and the PostgreSQL side of
// an HTTP call (interrupts, the server's environment) handed to the providers.
#pragma once

#include "pg_envelope/kms.hpp"

namespace pg_envelope {

// GUCs envelope.kms_* (from _PG_init).
void define_kms_gucs();

// What a provider needs from the server: settings refreshed at every call, the
// interrupt check (statement_timeout, pg_cancel_backend, shutdown) and getenv.
KmsContext kms_context();

// How long a backend waits for another backend's KMS call for the same DEK: the
// whole retry budget of that call plus a margin.
long kms_wait_budget_ms();

}  // namespace pg_envelope
