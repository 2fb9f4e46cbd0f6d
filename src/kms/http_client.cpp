// libcurl-based HTTP for KMS providers (see include/pg_envelope/http.hpp).
#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "pg_envelope/crypto.hpp"
#include "pg_envelope/error.hpp"
#include "pg_envelope/http.hpp"

namespace pg_envelope {

namespace {

using Clock = std::chrono::steady_clock;

long ms_since(Clock::time_point t0) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count());
}

// One handle per process: curl keeps its connection cache in it, so consecutive KMS
// calls reuse the TLS connection.
CURL* process_handle() {
  static CURL* handle = [] {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return curl_easy_init();
  }();
  if (handle == nullptr) throw std::bad_alloc();
  return handle;
}

constexpr std::size_t kMaxResponseBody = 16u << 20;

struct Transfer {
  HttpResponse* response;
  const std::function<bool()>* interrupted;
};

// libcurl calls these three from inside curl_easy_perform(): they are noexcept and
// nothing may escape them, since an exception there would end the backend with
// std::terminate. on_header and on_progress allocate nothing; on_body catches a
// failed allocation (and refuses an oversized body) by returning 0, which makes
// libcurl fail the transfer with CURLE_WRITE_ERROR: the call then fails like one
// that got no usable response (58000 "unreachable"), never with an exception here.

size_t on_body(char* ptr, size_t size, size_t nmemb, void* userdata) noexcept {
  auto* t = static_cast<Transfer*>(userdata);
  std::size_t n = size * nmemb;
  if (n > kMaxResponseBody || t->response->body.size() > kMaxResponseBody - n) return 0;  // a KMS answer is small
  try {
    t->response->body.append(ptr, n);
  } catch (...) {
    return 0;
  }
  return n;
}

size_t on_header(char* ptr, size_t size, size_t nmemb, void* userdata) noexcept {
  auto* t = static_cast<Transfer*>(userdata);
  std::size_t n = size * nmemb;
  long ms = parse_retry_after_ms(std::string_view(ptr, n));
  if (ms >= 0) t->response->retry_after_ms = ms;
  return n;
}

int on_progress(void* userdata, curl_off_t, curl_off_t, curl_off_t, curl_off_t) noexcept {
  auto* t = static_cast<Transfer*>(userdata);
  try {
    return (*t->interrupted && (*t->interrupted)()) ? 1 : 0;
  } catch (...) {
    return 1;  // aborts the transfer: reported as interrupted
  }
}

HttpFailure classify(CURLcode rc) {
  switch (rc) {
    case CURLE_OK: return HttpFailure::kNone;
    case CURLE_ABORTED_BY_CALLBACK: return HttpFailure::kInterrupted;
    case CURLE_OPERATION_TIMEDOUT: return HttpFailure::kTimeout;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE: return HttpFailure::kConnect;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM: return HttpFailure::kTls;
    default: return HttpFailure::kProtocol;
  }
}

bool retryable(HttpFailure f) { return f == HttpFailure::kConnect || f == HttpFailure::kTimeout; }

// Sleeps up to `ms`, in slices, returning false early when interrupted.
bool interruptible_sleep(long ms, const HttpOptions& o) {
  auto until = Clock::now() + std::chrono::milliseconds(ms);
  while (Clock::now() < until) {
    if (o.interrupted && o.interrupted()) return false;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    std::this_thread::sleep_for(std::min(left, std::chrono::milliseconds(50)));
  }
  return true;
}

HttpFailure perform_once(const HttpRequest& rq, const HttpOptions& o, long timeout_ms, HttpResponse& out,
                         std::string& error_text) {
  CURL* h = process_handle();
  curl_easy_reset(h);  // keeps the connection cache
  Transfer t{&out, &o.interrupted};
  char errbuf[CURL_ERROR_SIZE] = "";
  curl_slist* headers = nullptr;
  for (const auto& hd : rq.headers) headers = curl_slist_append(headers, hd.c_str());
  // Secret headers: curl copies them; our copy is wiped with `secret_headers`.
  for (const auto& hd : rq.secret_headers) headers = curl_slist_append(headers, hd.data());  // NUL-terminated

  curl_easy_setopt(h, CURLOPT_URL, rq.url.c_str());
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!o.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, o.ca_file.c_str());
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, std::max(1L, std::min(o.connect_timeout_ms, timeout_ms)));
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, std::max(1L, timeout_ms));
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, rq.method.c_str());
  if (rq.method == "POST" || !rq.body.empty()) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, rq.body.data());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(rq.body.size()));
  }
  if (headers) curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  if (!rq.aws_sigv4.empty()) {
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, rq.aws_sigv4.c_str());
    curl_easy_setopt(h, CURLOPT_USERPWD, rq.userpwd.c_str());  // NUL-terminated; curl copies it
  }
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, &t);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);

  CURLcode rc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out.status);
  // Drop secrets curl keeps in the handle (credentials, headers) until the next reset.
  curl_easy_setopt(h, CURLOPT_USERPWD, nullptr);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, nullptr);
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, nullptr);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, nullptr);
  for (curl_slist* s = headers; s != nullptr; s = s->next) secure_zero(s->data, std::strlen(s->data));
  curl_slist_free_all(headers);
  if (rc != CURLE_OK) error_text = errbuf[0] ? errbuf : curl_easy_strerror(rc);
  return classify(rc);
}

}  // namespace

long parse_retry_after_ms(std::string_view line) noexcept {
  constexpr std::string_view kName = "retry-after:";
  if (line.size() < kName.size()) return -1;
  for (std::size_t i = 0; i < kName.size(); ++i) {
    char c = line[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != kName[i]) return -1;
  }
  std::size_t i = kName.size();
  while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
  if (i < line.size() && line[i] == '+') ++i;
  // delay-seconds (RFC 9110): digits. Anything after them (a fraction, CR LF) is
  // ignored; no digits (an HTTP-date) means no delay asked for.
  std::size_t first = i;
  long seconds = 0;
  while (i < line.size() && line[i] >= '0' && line[i] <= '9') {
    if (seconds < kMaxRetryAfterSeconds) seconds = seconds * 10 + (line[i] - '0');
    ++i;
  }
  if (i == first) return -1;
  return std::min(seconds, kMaxRetryAfterSeconds) * 1000;
}

long backoff_delay_ms(int attempt, std::uint32_t random) {
  constexpr long kBase = 100, kCap = 2000;
  long ceiling = kCap;
  if (attempt < 0) attempt = 0;
  if (attempt < 5) ceiling = std::min(kCap, kBase << attempt);
  return static_cast<long>(random % static_cast<std::uint32_t>(ceiling));
}

HttpResult http_call(const HttpRequest& rq, const HttpOptions& options,
                     const std::function<Verdict(const HttpResponse&)>& judge) {
  HttpOptions o = options;
  if (o.refresh) o.refresh(o);
  HttpResult result;
  auto t0 = Clock::now();
  for (int attempt = 1;; ++attempt) {
    long left = o.total_budget_ms - ms_since(t0);
    if (left <= 0) {  // only before the first attempt: later ones check the budget before sleeping
      result.failure = HttpFailure::kBudget;
      break;
    }
    result.attempts = attempt;
    result.response = HttpResponse{};
    result.failure_text.clear();
    result.failure = perform_once(rq, o, std::min(o.attempt_timeout_ms, left), result.response, result.failure_text);
    bool retry;
    if (result.failure != HttpFailure::kNone) {
      retry = retryable(result.failure);
    } else {
      Verdict v = judge(result.response);
      if (v == Verdict::kSuccess) break;
      retry = (v == Verdict::kRetry);
    }
    if (!retry || attempt >= o.max_attempts) break;
    std::uint8_t r[4];
    random_bytes(r);
    long delay = backoff_delay_ms(attempt, (std::uint32_t{r[0]} << 24) | (r[1] << 16) | (r[2] << 8) | r[3]);
    if (result.response.retry_after_ms > delay) delay = result.response.retry_after_ms;
    if (delay >= o.total_budget_ms - ms_since(t0)) break;  // no time left for another attempt
    if (!interruptible_sleep(delay, o)) {
      result.failure = HttpFailure::kInterrupted;
      break;
    }
  }
  result.elapsed_ms = ms_since(t0);
  return result;
}

}  // namespace pg_envelope
