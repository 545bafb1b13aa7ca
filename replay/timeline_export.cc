#include "replay/timeline_export.h"

#include <cerrno>
#include <cstring>
#include <memory>

#include <fmt/core.h>

#include "replay/record_json.h"
#include "replay/render.h"
#include "replay/scan.h"

namespace auterity {

std::optional<timeline_format> parse_timeline_format(std::string_view name) {
  if (name == "text") return timeline_format::text;
  if (name == "jsonl") return timeline_format::jsonl;
  if (name == "html") return timeline_format::html;
  return std::nullopt;
}

uint64_t timeline_records_total(log& l, const replay_scope& scope) {
  uint64_t total = 0;
  for (uint32_t p : scope_partitions(scope, l.partition_count(), l.placement().base)) {
    for (stream s : timeline_streams) total += l.end_offset(s, p).value_or(0);  // progress only
  }
  return total;
}

namespace {

struct file_closer {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using file_ptr = std::unique_ptr<std::FILE, file_closer>;

result<void> put(std::FILE* f, std::string_view s) {
  if (std::fwrite(s.data(), 1, s.size(), f) != s.size()) {
    return fail(errc::io, fmt::format("writing the timeline: {}", std::strerror(errno)));
  }
  return {};
}

// One partition's part of the timeline, written to `out` as the scan goes.
class partition_writer {
 public:
  partition_writer(log& l, uint32_t p, const timeline_options& o, std::FILE* out)
      : _log(l), _p(p), _o(o), _out(out) {}

  result<void> run() {
    merged_reader reader(_log, _p, timeline_streams, _o.meter);
    history_collector c = make_collector();
    for (;;) {
      auto next = reader.next();
      if (!next) return std::unexpected(next.error());
      if (!*next) break;
      if (auto r = c.add(**next); !r) return r;
    }
    if (auto r = c.finish(); !r) return r;
    _stats.records_in_scope = c.records_in_scope();
    return {};
  }

  const timeline_stats& stats() const { return _stats; }

 private:
  history_collector make_collector() {
    if (_o.format == timeline_format::jsonl) {
      return history_collector(_p, _o.scope, [this](const scanned_record& r) -> result<void> {
        _line.clear();
        append_record_json(_line,
                           record_ref{r.s, r.partition, r.rec->offset, r.rec->key, r.rec->value});
        _line.push_back('\n');
        return put(_out, _line);
      });
    }
    return history_collector(
        _p, _o.scope,
        [this](history&& h) -> result<void> {
          ++_stats.histories_shown;
          const execution_view v = build_view(h);
          return put(_out, _o.format == timeline_format::html ? html_view_line(v) : render_text(v));
        },
        _o.limits);
  }

  log& _log;
  uint32_t _p;
  const timeline_options& _o;
  std::FILE* _out;
  std::string _line;
  timeline_stats _stats;
};

// Appends a spool to the output; for HTML, only up to the page's limit of executions (one
// data line each), counting the rest.
result<void> append_spool(std::FILE* spool, std::FILE* out, bool html, timeline_stats& stats) {
  std::rewind(spool);
  char* line = nullptr;
  size_t cap = 0;
  ssize_t n;
  result<void> r;
  while (r && (n = ::getline(&line, &cap, spool)) > 0) {
    if (html && stats.histories_shown >= html_executions_max) {
      ++stats.histories_omitted;
      continue;
    }
    if (html) ++stats.histories_shown;
    r = put(out, std::string_view(line, static_cast<size_t>(n)));
  }
  std::free(line);
  if (r && std::ferror(spool)) return fail(errc::io, "reading back a timeline spool file");
  return r;
}

}  // namespace

result<timeline_stats> write_timeline(log& l, const timeline_options& o, std::FILE* out) {
  const std::vector<uint32_t> parts =
      scope_partitions(o.scope, l.partition_count(), l.placement().base);
  const bool html = o.format == timeline_format::html;
  std::vector<file_ptr> spools;
  for (size_t i = 0; i < parts.size(); ++i) {
    spools.emplace_back(std::tmpfile());
    if (!spools.back()) {
      return fail(errc::io, fmt::format("cannot create a spool file: {}", std::strerror(errno)));
    }
  }
  std::vector<timeline_stats> per(parts.size());
  std::vector<uint32_t> slots(parts.size());
  for (uint32_t i = 0; i < slots.size(); ++i) slots[i] = i;
  auto r = for_each_partition(slots, o.threads, [&](uint32_t i) -> result<void> {
    partition_writer w(l, parts[i], o, spools[i].get());
    if (auto run = w.run(); !run) return run;
    per[i] = w.stats();
    return {};
  });
  if (!r) return std::unexpected(r.error());

  timeline_stats total;
  if (html) {
    if (auto h = put(out, html_head(o.title, o.scope_text)); !h) return std::unexpected(h.error());
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    total.records_in_scope += per[i].records_in_scope;
    if (!html) total.histories_shown += per[i].histories_shown;
    if (auto a = append_spool(spools[i].get(), out, html, total); !a) {
      return std::unexpected(a.error());
    }
  }
  if (html) {
    auto t = put(out, html_tail(total.histories_shown, total.histories_omitted));
    if (!t) return std::unexpected(t.error());
  }
  if (std::fflush(out) != 0) {
    return fail(errc::io, fmt::format("writing the timeline: {}", std::strerror(errno)));
  }
  return total;
}

}  // namespace auterity
