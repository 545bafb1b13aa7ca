#include "engine/json_envelope.h"

#include <algorithm>
#include <charconv>
#include <memory>

#include <flatbuffers/idl.h>
#include <flatbuffers/util.h>
#include <fmt/core.h>

#include "engine/assert.h"
#include "engine/record.h"
#include "schemas/auterity_fbs_text.h"

namespace auterity {
namespace {

// How much of the input before the error position a parse error quotes.
constexpr size_t error_excerpt_bytes_max = 40;

flatbuffers::IDLOptions parser_options() {
  flatbuffers::IDLOptions o;
  o.strict_json = true;  // ingress takes JSON, not FlatBuffers' relaxed JSON-like text
  o.indent_step = -1;    // one line
  o.no_warnings = true;  // error_ then holds only the error
  // natural_utf8 stays off: with it, control characters in strings come out unescaped, which
  // is not JSON. Text out is ASCII, anything else \u-escaped.
  return o;
}

std::unique_ptr<flatbuffers::Parser> make_parser() {
  auto p = std::make_unique<flatbuffers::Parser>(parser_options());
  vassert(p->Parse(schema_fbs_text), "the compiled-in schema does not parse: {}", p->error_);
  return p;
}

// flatbuffers::Parser is not thread-safe and costly to build, so each thread keeps one. It is
// rebuilt after a failed parse: an aborted parse leaves entries on the parser's internal stacks.
thread_local std::unique_ptr<flatbuffers::Parser> t_parser;

flatbuffers::Parser& parser() {
  if (!t_parser) t_parser = make_parser();
  return *t_parser;
}

// Valid UTF-8 stays; control bytes and broken sequences become '?', so a reason quoting the
// input is always valid text (it ends up in a DeadLetter that tools render as JSON).
std::string printable(std::string_view bytes) {
  const std::string s(bytes);
  std::string out;
  const char* p = s.c_str();
  const char* end = p + s.size();
  while (p < end) {
    const char* start = p;
    const int ucc = flatbuffers::FromUTF8(&p);
    if (ucc < 0x20 || ucc == 0x7f || p > end) {
      out += '?';
      p = start + 1;
    } else {
      out.append(start, p);
    }
  }
  return out;
}

// The text of `json` on line `line` (1-based) up to `column`, at most error_excerpt_bytes_max.
std::string_view excerpt_before(std::string_view json, unsigned line, unsigned column) {
  size_t begin = 0;
  for (unsigned l = 1; l < line && begin != std::string_view::npos; ++l) {
    begin = json.find('\n', begin);
    if (begin != std::string_view::npos) ++begin;
  }
  if (begin == std::string_view::npos || begin > json.size()) return {};
  const size_t end = std::min(json.size(), begin + column);
  const size_t from = end - std::min(end - begin, error_excerpt_bytes_max);
  return json.substr(from, end - from);
}

bool parse_uint(std::string_view text, unsigned& out) {
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  return std::from_chars(text.data(), text.data() + text.size(), out).ec == std::errc();
}

// FlatBuffers looks for a union's type field before the value or right after it. Without one
// it reports "missing type field ..." or, when the value ends the object, "expecting: ,
// instead got: }"; say what is missing.
std::string with_union_hint(std::string why, std::string_view json) {
  const bool missing_type = why.starts_with("missing type field for this union value: payload");
  if (!missing_type && why != "expecting: , instead got: }") return why;
  if (json.find("\"payload\"") == std::string_view::npos) return why;
  if (json.find("\"payload_type\"") == std::string_view::npos) {
    return R"(payload_type missing: payload needs its type, e.g. "payload_type":"Signal")";
  }
  if (missing_type) why += ": put payload_type before payload";
  return why;
}

// FlatBuffers reports "<line>: <column>: error: <what>"; say what first, then where, quoting
// the input just before the column.
std::string readable_error(std::string_view raw, std::string_view json) {
  const size_t at = raw.find("error: ");
  if (at == std::string_view::npos) return printable(raw.substr(0, raw.find('\n')));
  std::string_view what = raw.substr(at + 7);
  what = what.substr(0, what.find('\n'));
  while (!what.empty() && (what.back() == ' ' || what.back() == '\r')) what.remove_suffix(1);
  const std::string text = with_union_hint(printable(what), json);
  std::string_view where = raw.substr(0, at);
  const size_t colon = where.find(':');
  unsigned line = 0;
  unsigned column = 0;
  if (colon == std::string_view::npos || !parse_uint(where.substr(0, colon), line) ||
      !parse_uint(where.substr(colon + 1), column)) {
    return text;
  }
  return fmt::format("{} (line {}, column {}, after '{}')", text, line, column,
                     printable(excerpt_before(json, line, column)));
}

// JSON text → envelope bytes, unverified.
result<std::string> parse_json(std::string_view json) {
  // The parser reads a NUL-terminated string: a NUL inside would hide what follows it.
  if (const size_t nul = json.find('\0'); nul != std::string_view::npos) {
    return fail(errc::invalid, fmt::format("NUL byte at offset {}", nul));
  }
  flatbuffers::Parser& p = parser();
  p.builder_.Clear();
  p.error_.clear();
  // ParseJson, not Parse: Parse would also accept schema declarations and change the schema.
  if (!p.ParseJson(std::string(json).c_str())) {
    std::string why = readable_error(p.error_, json);
    t_parser.reset();
    return fail(errc::invalid, std::move(why));
  }
  std::string out(reinterpret_cast<const char*>(p.builder_.GetBufferPointer()),
                  p.builder_.GetSize());
  p.builder_.Clear();
  return out;
}

// Envelope bytes (verified) → JSON text; empty if a string is not valid UTF-8.
std::string text_of(std::string_view bytes, bool with_defaults) {
  flatbuffers::Parser& p = parser();
  p.opts.output_default_scalars_in_json = with_defaults;
  std::string text;
  if (!flatbuffers::GenerateText(p, bytes.data(), &text)) return {};
  return text;
}

// The parser cannot add a field to a finished buffer, so the stamp goes through text: the
// envelope's own JSON `text` (which leaves out the zero timestamp) with the field added, parsed
// again. The object has other fields: a verified envelope has a payload. Input-dependent, so
// failures are errors, never asserts: a record that crashed the engine would crash it again
// on every restart.
result<std::string> stamped(std::string text, int64_t arrival_ms) {
  if (text.size() <= 2 || text.front() != '{') {
    return fail(errc::invalid, "cannot stamp the arrival time: envelope text is not an object");
  }
  text.insert(1, fmt::format("\"timestamp_ms\": {},", arrival_ms));
  auto out = parse_json(text);
  if (!out) return fail(errc::invalid, "cannot stamp the arrival time: " + out.error().message);
  if (!decode_envelope(*out)) return fail(errc::invalid, "stamped envelope does not verify");
  return out;
}

}  // namespace

result<std::string> envelope_from_json(std::string_view json, int64_t arrival_ms) {
  auto bytes = parse_json(json);
  if (!bytes) return bytes;
  std::string why;
  const fbs::Envelope* env = decode_envelope(*bytes, &why);
  if (!env) return fail(errc::invalid, std::move(why));
  // Rendered whether stamped or not, so that acceptance never depends on the timestamp. (The
  // parser already refuses what cannot be rendered, such as unpaired surrogates.)
  std::string text = text_of(*bytes, /*with_defaults=*/false);
  if (text.empty()) {
    return fail(errc::invalid, "a string is not valid Unicode (an unpaired surrogate escape?)");
  }
  if (env->timestamp_ms() != 0 || arrival_ms == 0) return bytes;
  return stamped(std::move(text), arrival_ms);
}

std::string envelope_to_json(std::string_view bytes) {
  if (!decode_envelope(bytes)) return {};
  return text_of(bytes, /*with_defaults=*/true);
}

bool looks_like_json_object(std::string_view bytes) {
  const size_t at = bytes.find_first_not_of(" \t\r\n");
  return at != std::string_view::npos && bytes[at] == '{';
}

}  // namespace auterity
