#include "replay/json_text.h"

#include <fmt/core.h>

namespace auterity::json_text {

namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is not one (overlong forms,
// surrogates and code points past U+10FFFF are invalid, as RFC 3629 says).
size_t utf8_sequence(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  size_t n = 0;
  uint32_t cp = 0;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2, cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3, cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4, cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3f);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff) return 0;
  if (cp >= 0xd800 && cp <= 0xdfff) return 0;
  return n;
}

void append_escaped_ascii(std::string& out, char c, bool html_safe) {
  switch (c) {
    case '"':
      out += "\\\"";
      return;
    case '\\':
      out += "\\\\";
      return;
    case '\n':
      out += "\\n";
      return;
    case '\r':
      out += "\\r";
      return;
    case '\t':
      out += "\\t";
      return;
    default:
      break;
  }
  const bool html_special = c == '<' || c == '>' || c == '&';
  if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f || (html_safe && html_special)) {
    out += fmt::format("\\u{:04x}", static_cast<unsigned char>(c));
    return;
  }
  out.push_back(c);
}

}  // namespace

void append_string(std::string& out, std::string_view s, bool html_safe) {
  out.push_back('"');
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      append_escaped_ascii(out, s[i], html_safe);
      ++i;
      continue;
    }
    const size_t n = utf8_sequence(s, i);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
      continue;
    }
    out.append(s.substr(i, n));
    i += n;
  }
  out.push_back('"');
}

std::string quote(std::string_view s, bool html_safe) {
  std::string out;
  out.reserve(s.size() + 2);
  append_string(out, s, html_safe);
  return out;
}

void append_key(std::string& out, std::string_view key, bool& first, bool html_safe) {
  if (!first) out.push_back(',');
  first = false;
  append_string(out, key, html_safe);
  out.push_back(':');
}

}  // namespace auterity::json_text
