// Module entry: _PG_init defines the GUCs, reads the local master key (once, in the
// postmaster, when preloaded) and registers the shared-memory hooks.
#include "pg/guard.hpp"

extern "C" {
#include "utils/guc.h"
}

#include "pg/audit.hpp"
#include "pg/classification.hpp"
#include "pg/extension_objects.hpp"
#include "pg/shared_credentials.hpp"
#include "pg/shared_dek_cache.hpp"
#include "pg/dek_resolver.hpp"
#include "pg_envelope/kms.hpp"
#include "pg/key_change_commit.hpp"
#include "pg/kms_settings.hpp"
#include "pg/role_guard.hpp"
#include "pg/rotation_scheduler.hpp"
#include "pg/shared_memory.hpp"
#include "pg/format_setting.hpp"
#include "pg_envelope/crypto.hpp"

#include <cstdint>
#include <unordered_map>

extern "C" {
PG_MODULE_MAGIC;
void _PG_init(void);
}

namespace {

char* master_key_file = nullptr;
char* master_key_command = nullptr;
int master_key_command_timeout_ms = 30000;

// When preloaded the settings are PGC_POSTMASTER: read once, by the postmaster. When
// the library is loaded later (CREATE EXTENSION without preload) PGC_POSTMASTER
// variables cannot be defined any more; they are then defined as PGC_SIGHUP so that
// they still are superuser-only and cannot be SET, although nothing reads them.
void define_gucs(GucContext context) {
  DefineCustomStringVariable(
      "envelope.master_key_file", "File holding the local KMS master key (64 hex characters).",
      "Read once at server start. The file must not be accessible to group or others.", &master_key_file, "",
      context, GUC_SUPERUSER_ONLY, nullptr, nullptr, nullptr);
  DefineCustomStringVariable(
      "envelope.master_key_command", "Command that prints the local KMS master key (64 hex characters).",
      "Run once at server start, as the server's operating-system user.", &master_key_command, "",
      context, GUC_SUPERUSER_ONLY, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("envelope.master_key_command_timeout",
                          "How long envelope.master_key_command may run before it is killed.", nullptr,
                          &master_key_command_timeout_ms, 30000, 100, 3600000, context, GUC_UNIT_MS, nullptr,
                          nullptr, nullptr);
  pg_envelope::define_kms_gucs();
  pg_envelope::define_format_guc();
  pg_envelope::ext::define_version_check_guc();
  pg_envelope::dek_resolver::define_gucs();
  if (context == PGC_POSTMASTER) {
    pg_envelope::shared_dek_cache::define_gucs();
    pg_envelope::shared_credentials::define_gucs();
    pg_envelope::audit::define_gucs();
    pg_envelope::rotation_scheduler::define_gucs();
  }
#if PG_VERSION_NUM >= 150000
  MarkGUCPrefixReserved("envelope");
#else
  EmitWarningsOnPlaceholders("envelope");
#endif
}

// Loads the master key into this process's private memory. Failures are recorded
// and logged without the key; every function that needs the key then reports them.
void load_master_key() {
  using pg_envelope::MasterKeyStatus;
  bool have_file = master_key_file != nullptr && master_key_file[0] != '\0';
  bool have_command = master_key_command != nullptr && master_key_command[0] != '\0';
  MasterKeyStatus status;
  status.source = have_file ? "envelope.master_key_file" : "envelope.master_key_command";
  char level_msg[1024] = "";
  try {
    if (have_file && have_command) {
      status.state = MasterKeyStatus::State::kFailed;
      status.sqlstate = pg_envelope::sqlstate::kConfigFileError;
      status.source.clear();
      status.message = "Both envelope.master_key_file and envelope.master_key_command are set; set only one.";
    } else if (!have_file && !have_command) {
      status.state = MasterKeyStatus::State::kNotConfigured;
    } else {
      pg_envelope::install_master_key(have_file ? pg_envelope::read_master_key_file(master_key_file)
                                                : pg_envelope::read_master_key_command(master_key_command,
                                                                                     master_key_command_timeout_ms));
      return;
    }
  } catch (const pg_envelope::Error& e) {
    status.state = MasterKeyStatus::State::kFailed;
    status.sqlstate = e.sqlstate();
    // A full sentence for the DETAIL of later errors.
    status.message = "Cause: " + std::string(e.what()) + (e.detail().empty() ? "." : ": " + e.detail());
  } catch (const std::exception& e) {
    status.state = MasterKeyStatus::State::kFailed;
    status.sqlstate = pg_envelope::sqlstate::kInternalError;
    status.message = e.what();
  }
  if (status.state == MasterKeyStatus::State::kFailed)
    std::snprintf(level_msg, sizeof level_msg, "%s", status.message.c_str());
  pg_envelope::record_master_key_failure(std::move(status));
  pg_envelope::pg_call([&level_msg] {
    if (level_msg[0] != '\0')
      ereport(WARNING, (errmsg("pg_envelope: the local KMS master key was not loaded"),
                        errdetail_internal("%s", level_msg)));
    else
      ereport(LOG, (errmsg("pg_envelope: no local KMS master key is configured"),
                    errhint("Set envelope.master_key_file or envelope.master_key_command to use the local KMS.")));
  });
}

// Work every backend would otherwise repeat before its first decrypt, done once here in
// the postmaster (backends are forked from it and inherit the result): OpenSSL's
// algorithm fetches, and libstdc++'s lazily bound internal calls (the library is not
// linked with -z now; its hash tables' rehash policy is bound at the first insert).
void warm_up_for_backends() {
  try {
    pg_envelope::preload_algorithms();
    std::unordered_map<std::uint64_t, int> warm;
    for (int i = 0; i < 64; ++i) warm[static_cast<std::uint64_t>(i)] = i;
  } catch (const std::exception&) {
    // Only a head start: every primitive fetches on first use, and reports a failure then.
  }
}

}  // namespace

void _PG_init(void) {
  pg_envelope::guarded_hook(ERROR, "initialisation", [] {
    // Without the preload only the types are usable; every key function reports the
    // missing preload.
    pg_envelope::register_label_provider_once();
    if (!process_shared_preload_libraries_in_progress) {
      pg_envelope::pg_call([] { define_gucs(PGC_SIGHUP); });
      return;
    }
    pg_envelope::pg_call([] { define_gucs(PGC_POSTMASTER); });
    load_master_key();
    warm_up_for_backends();
    pg_envelope::pg_call([] { pg_envelope::request_shared_memory(); });
    pg_envelope::register_commit_callback();
    pg_envelope::dek_resolver::register_callbacks();
    pg_envelope::audit::register_callbacks();
    pg_envelope::rotation_scheduler::register_workers();
    pg_envelope::role_guard::register_hook();
  });
}
