// AWS STS for the aws-kms provider: the Query API calls AssumeRole (SigV4-signed with
// the base credentials, service "sts") and AssumeRoleWithWebIdentity (unsigned: the
// web identity token is the proof), and their XML answers. Pure C++.
//
// STS answers in XML. Only a small, strict subset is read (xml_text): elements,
// attributes (skipped), character data with the five predefined entities and
// character references, CDATA, comments and processing instructions; a DOCTYPE (which
// could declare entities) and anything not well-nested is refused.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

#include "aws_credentials.hpp"
#include "pg_envelope/http.hpp"
#include "pg_envelope/kms.hpp"
#include "pg_envelope/secrets.hpp"

namespace pg_envelope::remote::aws {

// The character data of the first element reached by `path` (local names, namespace
// prefixes ignored, from the root element down), entities decoded, into `out`. False
// when the document is malformed (also beyond that element), nested deeper than 64,
// or has no such element.
bool xml_text(std::string_view xml, std::initializer_list<std::string_view> path, SecretString& out);

// Form-encoding of one value (application/x-www-form-urlencoded as STS reads it:
// RFC 3986 unreserved characters as they are, every other byte %XX).
void append_form_value(SecretString& out, std::string_view value);

// The default STS endpoint of a region: https://sts.<region>.amazonaws.com
// (amazonaws.com.cn for the cn- regions).
std::string default_sts_endpoint(const std::string& region);

// The credentials of an STS answer to `action` ("AssumeRole" or
// "AssumeRoleWithWebIdentity"): <action>Response/<action>Result/Credentials with
// AccessKeyId, SecretAccessKey, SessionToken and Expiration. A refusal (any status but
// 2xx) is an Error naming STS's error code: 58000 for 429, 5xx and Throttling, else
// 28000 (no credentials could be obtained); its detail says `what` ("role \"arn\" at
// https://sts...") and STS's message (safe_message()). A malformed 2xx answer: 28000
// "malformed response".
Credentials parse_sts_response(const HttpResponse& response, std::string_view action, const std::string& kms,
                               const std::string& what);

// Whether an STS answer is final, worth retrying (429, 5xx, Throttling) or failed.
Verdict judge_sts_response(const HttpResponse& response);

// The role to assume on top of the credentials the chain found (provider options
// role_arn, external_id, role_session_name, duration_seconds).
struct RoleConfig {
  std::string role_arn;       // empty: no role assumption
  std::string external_id;    // empty: none sent
  std::string session_name;   // empty: "pg_envelope-<pid>"
  long duration_seconds = 0;  // 0: not sent (STS's default, one hour)
};

// Checks the role options: role_arn "arn:<partition>:iam::<12 digits>:role/<path+name>",
// external_id 2 to 1224 characters of [A-Za-z0-9+=,.@:/-], role_session_name 2 to 64
// of [A-Za-z0-9+=,.@_-], duration_seconds 900 to 43200, and external_id,
// role_session_name or duration_seconds only with role_arn. Throws Error 22023.
void validate_role_config(const RoleConfig& role, const std::string& kms);

// The session name to use: the configured one, else "pg_envelope-<pid>".
std::string session_name_or_default(const std::string& configured);

// STS AssumeRole signed with `base` (SigV4, service "sts", `region`): the temporary
// credentials of the role. `endpoint` is the STS base URL.
Credentials assume_role(const RoleConfig& role, const Credentials& base, const std::string& endpoint,
                        const std::string& region, const std::string& kms, const KmsContext& ctx);

// STS AssumeRoleWithWebIdentity (unsigned) with the token `web_identity_token`.
Credentials assume_role_with_web_identity(const std::string& role_arn, const std::string& session_name,
                                          const SecretString& web_identity_token, const std::string& endpoint,
                                          const std::string& kms, const KmsContext& ctx);

}  // namespace pg_envelope::remote::aws
