#include "replay/record_json.h"

#include <algorithm>
#include <vector>

#include <flatbuffers/reflection.h>
#include <fmt/core.h>

#include "engine/assert.h"
#include "replay/json_text.h"
#include "replay/time_text.h"

extern const unsigned char auterity_schema_bfbs[];  // generated: replay/CMakeLists.txt
extern const size_t auterity_schema_bfbs_size;

namespace auterity {

namespace {

using reflection::BaseType;

// The embedded schema, with each object's fields in declaration order (the binary schema
// keeps them sorted by name) and the payload union's member objects by type tag.
struct reflected_schema {
  const reflection::Schema* schema = nullptr;
  std::vector<std::vector<const reflection::Field*>> fields;  // by object index
  std::vector<const reflection::Object*> payloads;            // by fbs::Payload value
};

const reflection::Enum* find_enum(const reflection::Schema& s, std::string_view name) {
  for (const reflection::Enum* e : *s.enums()) {
    if (sv(e->name()) == name) return e;
  }
  return nullptr;
}

reflected_schema load_schema() {
  flatbuffers::Verifier v(auterity_schema_bfbs, auterity_schema_bfbs_size);
  vassert(reflection::VerifySchemaBuffer(v), "embedded record schema fails verification");
  reflected_schema r;
  r.schema = reflection::GetSchema(auterity_schema_bfbs);
  for (const reflection::Object* o : *r.schema->objects()) {
    std::vector<const reflection::Field*> f(o->fields()->begin(), o->fields()->end());
    std::sort(f.begin(), f.end(), [](auto a, auto b) { return a->id() < b->id(); });
    r.fields.push_back(std::move(f));
  }
  const reflection::Enum* payload = find_enum(*r.schema, "auterity.schema.Payload");
  vassert(payload != nullptr, "embedded schema has no Payload union");
  for (const reflection::EnumVal* v : *payload->values()) {
    const auto tag = static_cast<size_t>(v->value());
    if (r.payloads.size() <= tag) r.payloads.resize(tag + 1, nullptr);
    if (v->union_type() && v->union_type()->base_type() == BaseType::Obj) {
      r.payloads[tag] = r.schema->objects()->Get(v->union_type()->index());
    }
  }
  return r;
}

const reflected_schema& record_schema() {
  static const reflected_schema s = load_schema();  // thread-safe initialisation
  return s;
}

size_t object_index(const reflection::Object* o) {
  const auto* objects = record_schema().schema->objects();
  for (size_t i = 0; i < objects->size(); ++i) {
    if (objects->Get(static_cast<flatbuffers::uoffset_t>(i)) == o) return i;
  }
  vassert(false, "object {} not in the schema", sv(o->name()));
  return 0;
}

class json_walker {
 public:
  json_walker(std::string& out, bool html_safe) : _out(out), _html(html_safe) {}

  void table(const flatbuffers::Table& t, const reflection::Object& obj) {
    _out.push_back('{');
    bool first = true;
    for (const reflection::Field* f : record_schema().fields[object_index(&obj)]) {
      if (f->deprecated() || f->type()->base_type() == BaseType::UType) continue;
      json_text::append_key(_out, sv(f->name()), first, _html);
      field(t, *f);
    }
    _out.push_back('}');
  }

 private:
  void field(const flatbuffers::Table& t, const reflection::Field& f) {
    const reflection::Type& type = *f.type();
    switch (type.base_type()) {
      case BaseType::String:
        return string_or_null(flatbuffers::GetFieldS(t, f));
      case BaseType::Vector:
        return vector(t, f);
      case BaseType::Obj:
        return object(t, f);
      case BaseType::Float:
      case BaseType::Double:
        _out += fmt::format("{}", flatbuffers::GetFieldF<double>(t, f));
        return;
      case BaseType::Union:
        _out += "null";
        return;  // payload tables hold no unions today
      default:
        return integer(scalar_of(t, f), type);
    }
  }

  // Integers of any width, read with their own type.
  static int64_t scalar_of(const flatbuffers::Table& t, const reflection::Field& f) {
    const int64_t d = f.default_integer();
    switch (f.type()->base_type()) {
      case BaseType::Bool:
      case BaseType::UByte:
        return t.GetField<uint8_t>(f.offset(), static_cast<uint8_t>(d));
      case BaseType::Byte:
        return t.GetField<int8_t>(f.offset(), static_cast<int8_t>(d));
      case BaseType::Short:
        return t.GetField<int16_t>(f.offset(), static_cast<int16_t>(d));
      case BaseType::UShort:
        return t.GetField<uint16_t>(f.offset(), static_cast<uint16_t>(d));
      case BaseType::Int:
        return t.GetField<int32_t>(f.offset(), static_cast<int32_t>(d));
      case BaseType::UInt:
        return t.GetField<uint32_t>(f.offset(), static_cast<uint32_t>(d));
      case BaseType::Long:
        return t.GetField<int64_t>(f.offset(), d);
      case BaseType::ULong:
        return static_cast<int64_t>(t.GetField<uint64_t>(f.offset(), static_cast<uint64_t>(d)));
      default:
        return 0;
    }
  }

  void integer(int64_t v, const reflection::Type& type) {
    if (type.base_type() == BaseType::Bool) {
      _out += v ? "true" : "false";
      return;
    }
    if (type.index() >= 0) {  // an enum: its name, or the number if this schema lacks it
      for (const reflection::EnumVal* e :
           *record_schema().schema->enums()->Get(type.index())->values()) {
        if (e->value() == v) return json_text::append_string(_out, sv(e->name()), _html);
      }
    }
    if (type.base_type() == BaseType::ULong) {
      _out += fmt::format("{}", static_cast<uint64_t>(v));
    } else {
      _out += fmt::format("{}", v);
    }
  }

  void string_or_null(const flatbuffers::String* s) {
    if (!s) {
      _out += "null";
      return;
    }
    json_text::append_string(_out, sv(s), _html);
  }

  void object(const flatbuffers::Table& t, const reflection::Field& f) {
    const reflection::Object& obj = *record_schema().schema->objects()->Get(f.type()->index());
    if (obj.is_struct()) {  // no structs in the schema today; shown by size until one appears
      _out += "null";
      return;
    }
    const flatbuffers::Table* sub = flatbuffers::GetFieldT(t, f);
    if (!sub) {
      _out += "null";
      return;
    }
    table(*sub, obj);
  }

  void vector(const flatbuffers::Table& t, const reflection::Field& f) {
    const BaseType element = f.type()->element();
    if (element == BaseType::UByte || element == BaseType::Byte) {
      const auto* v = flatbuffers::GetFieldV<uint8_t>(t, f);
      _out += v ? json_text::quote(hex(v->data(), v->size())) : "null";
      return;
    }
    const flatbuffers::VectorOfAny* v = flatbuffers::GetFieldAnyV(t, f);
    if (!v) {
      _out += "null";
      return;
    }
    _out.push_back('[');
    for (flatbuffers::uoffset_t i = 0; i < v->size(); ++i) {
      if (i) _out.push_back(',');
      vector_element(*v, i, *f.type());
    }
    _out.push_back(']');
  }

  void vector_element(const flatbuffers::VectorOfAny& v, flatbuffers::uoffset_t i,
                      const reflection::Type& type) {
    switch (type.element()) {
      case BaseType::String:
        return string_or_null(
            flatbuffers::GetAnyVectorElemPointer<const flatbuffers::String>(&v, i));
      case BaseType::Obj: {
        const reflection::Object& obj = *record_schema().schema->objects()->Get(type.index());
        if (obj.is_struct()) {
          _out += "null";
          return;
        }
        return table(*flatbuffers::GetAnyVectorElemPointer<const flatbuffers::Table>(&v, i), obj);
      }
      default: {
        const size_t size = flatbuffers::GetTypeSize(type.element());
        const uint8_t* p = v.Data() + i * size;
        int64_t value = 0;
        switch (size) {
          case 2:
            value = flatbuffers::ReadScalar<int16_t>(p);
            break;
          case 4:
            value = flatbuffers::ReadScalar<int32_t>(p);
            break;
          case 8:
            value = flatbuffers::ReadScalar<int64_t>(p);
            break;
          default:
            value = *p;
            break;
        }
        _out += fmt::format("{}", value);
      }
    }
  }

  std::string& _out;
  bool _html;
};

void append_header_fields(std::string& out, const record_ref& r, bool& first) {
  json_text::append_key(out, "stream", first);
  json_text::append_string(out, stream_name(r.s));
  json_text::append_key(out, "partition", first);
  out += fmt::format("{}", r.partition);
  json_text::append_key(out, "offset", first);
  out += fmt::format("{}", r.offset);
  json_text::append_key(out, "key", first);
  json_text::append_string(out, r.key);
}

void append_string_field(std::string& out, std::string_view key, std::string_view v, bool& first) {
  json_text::append_key(out, key, first);
  json_text::append_string(out, v);
}

}  // namespace

void append_payload_json(std::string& out, const fbs::Envelope& env, bool html_safe) {
  const auto tag = static_cast<size_t>(env.payload_type());
  const reflected_schema& s = record_schema();
  const auto* payload = static_cast<const flatbuffers::Table*>(env.payload());
  if (tag >= s.payloads.size() || !s.payloads[tag] || !payload) {
    out += "null";
    return;
  }
  json_walker(out, html_safe).table(*payload, *s.payloads[tag]);
}

void append_record_json(std::string& out, const record_ref& r) {
  out.push_back('{');
  bool first = true;
  append_header_fields(out, r, first);
  std::string why;
  const fbs::Envelope* e = decode_envelope(r.bytes, &why);
  if (!e) {
    append_string_field(out, "error", "undecodable: " + why, first);
    json_text::append_key(out, "bytes", first);
    out += fmt::format("{}", r.bytes.size());
    append_string_field(out, "hash", hex(sha256(r.bytes)), first);
    out.push_back('}');
    return;
  }
  append_string_field(out, "kind", fbs::EnumNameRecordKind(e->kind()), first);
  append_string_field(out, "type", payload_name(e->payload_type()), first);
  json_text::append_key(out, "schema_version", first);
  out += fmt::format("{}", e->schema_version());
  append_string_field(out, "tenant", sv(e->tenant_id()), first);
  append_string_field(out, "execution", sv(e->execution_id()), first);
  append_string_field(out, "record_id", sv(e->record_id()), first);
  append_string_field(out, "causation_id", sv(e->causation_id()), first);
  append_string_field(out, "timestamp", format_time_ms(e->timestamp_ms()), first);
  json_text::append_key(out, "timestamp_ms", first);
  out += fmt::format("{}", e->timestamp_ms());
  const auto* prev = e->prev_hash();
  append_string_field(out, "prev_hash", prev ? hex(prev->data(), prev->size()) : "", first);
  append_string_field(out, "hash", hex(sha256(r.bytes)), first);
  json_text::append_key(out, "payload", first);
  append_payload_json(out, *e);
  out.push_back('}');
}

std::string payload_summary(const fbs::Envelope& env, size_t chars_max) {
  std::string json;
  append_payload_json(json, env);
  if (json.size() <= chars_max) return json;
  size_t cut = chars_max;
  while (cut > 0 && (static_cast<unsigned char>(json[cut]) & 0xc0) == 0x80) --cut;  // UTF-8
  return json.substr(0, cut) + "…";
}

}  // namespace auterity
