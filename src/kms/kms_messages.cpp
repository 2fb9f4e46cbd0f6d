// Service error text made safe to show (see kms_messages.hpp).
#include "kms_messages.hpp"

namespace pg_envelope::remote {

std::string safe_message(std::string_view text) {
  std::string out;
  bool quoted = false;
  for (char c : text) {
    if (out.size() >= 200) {
      out += "...";
      break;
    }
    if (c == '"') {
      if (!quoted) out += "\"...\"";
      quoted = !quoted;
      continue;
    }
    if (quoted) continue;
    out += (c >= ' ' && c < 127) ? c : ' ';
  }
  while (!out.empty() && (out.back() == '.' || out.back() == ' ')) out.pop_back();  // we end the sentence
  return out;
}

namespace vault {

std::string error_text(std::string_view m) {
  std::string out;
  bool space = false;
  for (std::size_t i = 0; i < m.size();) {
    unsigned char c = static_cast<unsigned char>(m[i]);
    std::size_t n = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
    if (i + n > m.size()) break;
    if (c <= ' ' || c == 0x7F) {
      space = !out.empty();
      ++i;
      continue;
    }
    if (out.size() + (space ? 1 : 0) + n > 200) break;
    if (space) out += ' ';
    space = false;
    out.append(m.data() + i, n);
    i += n;
  }
  return out;
}

}  // namespace vault

}  // namespace pg_envelope::remote
