// JSON parsing and serialisation in wiping storage (see secure_json.hpp).
#include "secure_json.hpp"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <utility>

#include "pg_envelope/error.hpp"

namespace pg_envelope::remote {

// Appends code point `cp` to `out` in UTF-8 (see secure_json.hpp).
void append_utf8(SecretString& out, unsigned long cp) {
  char b[4];
  std::size_t n;
  if (cp < 0x80) {
    b[0] = static_cast<char>(cp);
    n = 1;
  } else if (cp < 0x800) {
    b[0] = static_cast<char>(0xC0 | (cp >> 6));
    b[1] = static_cast<char>(0x80 | (cp & 0x3F));
    n = 2;
  } else if (cp < 0x10000) {
    b[0] = static_cast<char>(0xE0 | (cp >> 12));
    b[1] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    b[2] = static_cast<char>(0x80 | (cp & 0x3F));
    n = 3;
  } else {
    b[0] = static_cast<char>(0xF0 | (cp >> 18));
    b[1] = static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    b[2] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    b[3] = static_cast<char>(0x80 | (cp & 0x3F));
    n = 4;
  }
  out.append(b, n);
  secure_zero(b, sizeof b);
}

namespace {

// The length (1 to 4) of the well-formed UTF-8 sequence at p, as RFC 3629 defines
// it (no overlong forms, no surrogates, nothing above U+10FFFF); 0 when there is none.
std::size_t utf8_length(const unsigned char* p, const unsigned char* end) noexcept {
  auto in = [&](std::size_t i, unsigned lo, unsigned hi) { return p + i < end && p[i] >= lo && p[i] <= hi; };
  const unsigned c = p[0];
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return in(1, 0x80, 0xBF) ? 2 : 0;
  if (c == 0xE0) return in(1, 0xA0, 0xBF) && in(2, 0x80, 0xBF) ? 3 : 0;
  if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return in(1, 0x80, 0xBF) && in(2, 0x80, 0xBF) ? 3 : 0;
  if (c == 0xED) return in(1, 0x80, 0x9F) && in(2, 0x80, 0xBF) ? 3 : 0;
  if (c == 0xF0) return in(1, 0x90, 0xBF) && in(2, 0x80, 0xBF) && in(3, 0x80, 0xBF) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return in(1, 0x80, 0xBF) && in(2, 0x80, 0xBF) && in(3, 0x80, 0xBF) ? 4 : 0;
  if (c == 0xF4) return in(1, 0x80, 0x8F) && in(2, 0x80, 0xBF) && in(3, 0x80, 0xBF) ? 4 : 0;
  return 0;
}

int hex_digit(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A JSON string value built in place, so its characters are copied exactly once,
// into the string json owns.
json string_value(const SecretString& s) {
  json j(json::value_t::string);
  j.get_ref<json::string_t&>().assign(s.data(), s.size());
  return j;
}

class Parser {
 public:
  explicit Parser(std::string_view text) : p_(text.data()), end_(text.data() + text.size()) {}

  bool parse(json& out) {
    // As nlohmann's lexer: a UTF-8 byte order mark at the start is skipped.
    if (end_ - p_ >= 3 && static_cast<unsigned char>(p_[0]) == 0xEF && static_cast<unsigned char>(p_[1]) == 0xBB &&
        static_cast<unsigned char>(p_[2]) == 0xBF)
      p_ += 3;
    skip_ws();
    if (!value(out, 0)) return false;
    skip_ws();
    // nlohmann's lexer reads a NUL byte as the end of the input (for C strings), so
    // whatever follows one after the value is ignored there too.
    return p_ == end_ || *p_ == '\0';
  }

 private:
  void skip_ws() noexcept {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }

  bool literal(std::string_view word) noexcept {
    if (static_cast<std::size_t>(end_ - p_) < word.size() || std::string_view(p_, word.size()) != word) return false;
    p_ += word.size();
    return true;
  }

  bool value(json& out, int depth) {
    if (p_ == end_) return false;
    switch (*p_) {
      case '{': return object(out, depth + 1);
      case '[': return array(out, depth + 1);
      case '"': {
        scratch_.wipe();
        if (!string(scratch_)) return false;
        out = string_value(scratch_);
        scratch_.wipe();
        return true;
      }
      case 't': out = true; return literal("true");
      case 'f': out = false; return literal("false");
      case 'n': out = nullptr; return literal("null");
      default: return number(out);
    }
  }

  bool object(json& out, int depth) {
    if (depth > kMaxJsonDepth) return false;
    ++p_;  // '{'
    out = json::object();
    auto& members = out.get_ref<json::object_t&>();
    skip_ws();
    if (p_ < end_ && *p_ == '}') {
      ++p_;
      return true;
    }
    for (;;) {
      if (p_ == end_ || *p_ != '"') return false;
      scratch_.wipe();
      if (!string(scratch_)) return false;
      json::string_t key(scratch_.data(), scratch_.size());
      scratch_.wipe();
      skip_ws();
      bool ok = p_ < end_ && *p_ == ':';
      json member;
      if (ok) {
        ++p_;
        skip_ws();
        ok = value(member, depth);
      }
      if (ok) members[std::move(key)] = std::move(member);  // a repeated key keeps its last value
      secure_zero(key.data(), key.capacity());  // the inline buffer of a short key, moved or not
      if (!ok) return false;
      skip_ws();
      if (p_ == end_) return false;
      if (*p_ == '}') {
        ++p_;
        return true;
      }
      if (*p_ != ',') return false;
      ++p_;
      skip_ws();
    }
  }

  bool array(json& out, int depth) {
    if (depth > kMaxJsonDepth) return false;
    ++p_;  // '['
    out = json::array();
    auto& items = out.get_ref<json::array_t&>();
    skip_ws();
    if (p_ < end_ && *p_ == ']') {
      ++p_;
      return true;
    }
    for (;;) {
      json item;
      if (!value(item, depth)) return false;
      items.push_back(std::move(item));
      skip_ws();
      if (p_ == end_) return false;
      if (*p_ == ']') {
        ++p_;
        return true;
      }
      if (*p_ != ',') return false;
      ++p_;
      skip_ws();
    }
  }

  // Four hex digits after "\u".
  bool hex4(unsigned& cp) noexcept {
    if (end_ - p_ < 4) return false;
    cp = 0;
    for (int i = 0; i < 4; ++i) {
      int d = hex_digit(p_[i]);
      if (d < 0) return false;
      cp = (cp << 4) | static_cast<unsigned>(d);
    }
    p_ += 4;
    return true;
  }


  // A string at p_ (which is at its opening quote), decoded into `out`.
  bool string(SecretString& out) {
    ++p_;  // '"'
    for (;;) {
      // The longest run that needs no decoding is copied at once.
      const char* run = p_;
      while (p_ < end_ && *p_ != '"' && *p_ != '\\' && static_cast<unsigned char>(*p_) >= 0x20 &&
             static_cast<unsigned char>(*p_) < 0x80)
        ++p_;
      out.append(run, static_cast<std::size_t>(p_ - run));
      if (p_ == end_) return false;
      const unsigned char c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        ++p_;
        return true;
      }
      if (c < 0x20) return false;  // control characters must be escaped
      if (c >= 0x80) {
        std::size_t n = utf8_length(reinterpret_cast<const unsigned char*>(p_), reinterpret_cast<const unsigned char*>(end_));
        if (n == 0) return false;
        out.append(p_, n);
        p_ += n;
        continue;
      }
      // A backslash.
      if (++p_ == end_) return false;
      char e = *p_++;
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          unsigned cp = 0;
          if (!hex4(cp)) return false;
          if (cp >= 0xDC00 && cp <= 0xDFFF) return false;  // a low surrogate alone
          if (cp >= 0xD800 && cp <= 0xDBFF) {              // must be followed by a low one
            unsigned lo = 0;
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') return false;
            p_ += 2;
            if (!hex4(lo) || lo < 0xDC00 || lo > 0xDFFF) return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: return false;
      }
    }
  }

  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, typed as nlohmann does: an
  // integer that fits is unsigned (or, when negative, signed), anything else a finite
  // double.
  bool number(json& out) {
    const char* start = p_;
    auto digits = [&] {
      const char* d = p_;
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
      return p_ > d;
    };
    bool negative = p_ < end_ && *p_ == '-';
    if (negative) ++p_;
    if (p_ == end_) return false;
    if (*p_ == '0') {
      ++p_;
    } else if (*p_ >= '1' && *p_ <= '9') {
      digits();
    } else {
      return false;
    }
    bool integer = true;
    if (p_ < end_ && *p_ == '.') {
      ++p_;
      if (!digits()) return false;
      integer = false;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (!digits()) return false;
      integer = false;
    }
    if (integer) {
      if (negative) {
        std::int64_t v = 0;
        auto r = std::from_chars(start, p_, v);
        if (r.ec == std::errc{} && r.ptr == p_) {
          out = v;
          return true;
        }
      } else {
        std::uint64_t v = 0;
        auto r = std::from_chars(start, p_, v);
        if (r.ec == std::errc{} && r.ptr == p_) {
          out = v;
          return true;
        }
      }
    }
    double d = 0;
    auto r = std::from_chars(start, p_, d);
    if (r.ec == std::errc::result_out_of_range) {
      // Overflow or underflow: strtod tells them apart (HUGE_VAL, or a tiny value),
      // and is what nlohmann uses. The number text holds no secret.
      std::string copy(start, p_);
      d = std::strtod(copy.c_str(), nullptr);
    } else if (r.ec != std::errc{} || r.ptr != p_) {
      return false;
    }
    if (!std::isfinite(d)) return false;
    out = d;
    return true;
  }

  const char* p_;
  const char* end_;
  SecretString scratch_;  // the string being decoded
};

void append_escaped(SecretString& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    const unsigned char* run = p;
    while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\') ++p;
    out.append(reinterpret_cast<const char*>(run), static_cast<std::size_t>(p - run));
    if (p == end) break;
    const unsigned char c = *p;
    if (c >= 0x80) {
      std::size_t n = utf8_length(p, end);
      if (n == 0)
        throw Error(sqlstate::kInternalError, "a KMS request holds a string that is not valid UTF-8");
      out.append(reinterpret_cast<const char*>(p), n);
      p += n;
      continue;
    }
    ++p;
    switch (c) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\b': out.append("\\b"); break;
      case '\f': out.append("\\f"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      case '\t': out.append("\\t"); break;
      default: {
        char u[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0x0F]};
        out.append(u, sizeof u);
      }
    }
  }
}

void dump_into(SecretString& out, const json& v) {
  switch (v.type()) {
    case json::value_t::string:
      out.push_back('"');
      append_escaped(out, v.get_ref<const json::string_t&>());
      out.push_back('"');
      break;
    case json::value_t::object: {
      out.push_back('{');
      bool first = true;
      for (const auto& [key, member] : v.get_ref<const json::object_t&>()) {
        if (!first) out.push_back(',');
        first = false;
        out.push_back('"');
        append_escaped(out, key);
        out.append("\":");
        dump_into(out, member);
      }
      out.push_back('}');
      break;
    }
    case json::value_t::array: {
      out.push_back('[');
      bool first = true;
      for (const auto& item : v.get_ref<const json::array_t&>()) {
        if (!first) out.push_back(',');
        first = false;
        dump_into(out, item);
      }
      out.push_back(']');
      break;
    }
    default: {
      // null, booleans and numbers hold no secret: nlohmann writes them.
      auto text = v.dump();
      out.append(text);
    }
  }
}

}  // namespace

json parse_json_secret(std::string_view text) {
  Parser parser(text);
  json out;
  if (!parser.parse(out)) return json(json::value_t::discarded);
  return out;
}

SecretString dump_json_secret(const json& value) {
  SecretString out;
  dump_into(out, value);
  return out;
}

}  // namespace pg_envelope::remote
