// The security-label provider "pg_envelope" that holds column classifications
// (src/sql/classify_functions.cpp).
#pragma once

namespace pg_envelope {

// Registers the provider in this process (from _PG_init; once).
void register_label_provider_once();

}  // namespace pg_envelope
