// KMS and metadata-service URLs (see url.hpp), over libcurl's URL parser.
#include "url.hpp"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>

#include <algorithm>
#include <cctype>
#include <new>

#include "pg_envelope/error.hpp"

namespace pg_envelope {

void check_kms_url(std::string_view url, std::string_view kms_name, std::string_view option) {
  const std::string of_kms = "KMS \"" + std::string(kms_name) + "\"";
  const std::string subject = option.empty() ? of_kms : "\"" + std::string(option) + "\" of " + of_kms;
  CURLU* u = curl_url();
  if (u == nullptr) throw std::bad_alloc();
  std::string s(url);
  char* scheme = nullptr;
  char* host = nullptr;
  bool parsed = curl_url_set(u, CURLUPART_URL, s.c_str(), 0) == CURLUE_OK &&
                curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
                curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK;
  std::string sch = scheme ? scheme : "", hst = host ? host : "";
  curl_free(scheme);
  curl_free(host);
  curl_url_cleanup(u);
  if (!parsed)
    throw Error(sqlstate::kInvalidParameterValue,
                option.empty() ? "invalid URL for " + of_kms : "invalid \"" + std::string(option) + "\" for " + of_kms,
                "The address is not a valid absolute URL.");
  // Loopback only by address, never by a name that merely starts with "127."
  // (127.0.0.1.example.com is an ordinary host).
  std::string bare = hst.size() > 2 && hst.front() == '[' && hst.back() == ']' ? hst.substr(1, hst.size() - 2) : hst;
  in_addr v4{};
  in6_addr v6{};
  bool loopback = hst == "localhost" ||
                  (inet_pton(AF_INET, bare.c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127) ||
                  (inet_pton(AF_INET6, bare.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6));
  if (sch == "https" || (sch == "http" && loopback)) return;
  throw Error(sqlstate::kInvalidParameterValue, subject + " must be reached over https",
              "Plain http is allowed only to loopback addresses (127.0.0.0/8, ::1, localhost).",
              "Use an https:// address.");
}

namespace remote {

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

}  // namespace

bool parse_url(std::string_view url, UrlParts& out) {
  CURLU* u = curl_url();
  if (u == nullptr) throw std::bad_alloc();
  std::string s(url);
  char *scheme = nullptr, *host = nullptr, *port = nullptr, *path = nullptr;
  bool ok = curl_url_set(u, CURLUPART_URL, s.c_str(), 0) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK;
  if (ok) {
    out.scheme = lower(scheme);
    out.host = lower(host);
    out.port = port;
    out.path = path;
  }
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  curl_free(path);
  curl_url_cleanup(u);
  return ok;
}

void check_base_url(std::string_view url, const std::string& kms, const char* option, bool metadata) {
  bool clean = !url.empty() && std::all_of(url.begin(), url.end(), [](char c) {
    return c > ' ' && c < 127 && c != '?' && c != '#' && c != '@';
  });
  if (!clean)
    throw Error(sqlstate::kInvalidParameterValue, "invalid \"" + std::string(option) + "\" for KMS \"" + kms + "\"",
                "The address must be a base URL without query, fragment, user information or spaces.");
  UrlParts p;
  if (metadata && parse_url(url, p) && p.scheme == "http" &&
      (p.host == "169.254.169.254" || p.host == "metadata.google.internal"))
    return;
  check_kms_url(url, kms, option);
}

}  // namespace remote

}  // namespace pg_envelope
