// URLs of KMSs and instance-metadata services: where pg_envelope may send a request,
// and the parts of a URL that decide it. Every remote provider checks its address
// options with these when it is built, so a KMS configuration can never point a
// request (and the credentials it carries) at plain http on another host. Pure C++
// (libcurl's URL parser).
#pragma once

#include <string>
#include <string_view>

namespace pg_envelope {

// Throws Error 22023 unless `url` is https, or http to a loopback address
// (127.0.0.0/8, ::1, localhost: by address, never by a name that only starts so).
// `option`, when given, is the KMS option the URL came from: the error names it
// (never the URL, which may carry more than an address).
void check_kms_url(std::string_view url, std::string_view kms_name, std::string_view option = {});

namespace remote {

// The parts of an absolute URL that decide where a request goes.
struct UrlParts {
  std::string scheme;  // lower case
  std::string host;    // lower case; IPv6 in brackets
  std::string port;    // always set: explicit, or the scheme's default
  std::string path;
};
bool parse_url(std::string_view url, UrlParts& out);

// Checks the base URL of a KMS or metadata service: check_kms_url() (https, or http
// to loopback), no query, fragment or user info, since paths are appended to it.
// With `metadata` true, plain http is also allowed to the link-local instance-metadata
// address 169.254.169.254 and to metadata.google.internal: those services speak only
// http, and pg_envelope sends them no secret.
void check_base_url(std::string_view url, const std::string& kms_name, const char* option, bool metadata = false);

}  // namespace remote

}  // namespace pg_envelope
