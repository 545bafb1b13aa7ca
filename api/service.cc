#include "api/service.h"

#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <variant>

#include <fmt/core.h>
#include <openssl/rand.h>
#include <nlohmann/json.hpp>

#include "api/limits.h"
#include "api_openapi.h"  // generated: the text of api/openapi.json
#include "engine/http_client.h"
#include "engine/record.h"
#include "processors/client.h"
#include "processors/execution_state.h"
#include "processors/ids.h"
#include "processors/orchestrator_state.h"
#include "processors/rejection.h"
#include "replay/record_json.h"
#include "replay/timeline_export.h"

namespace auterity {

std::string_view openapi_document() { return api_openapi_json; }

namespace {

using json = nlohmann::json;
using clock_type = std::chrono::steady_clock;

// ---------------------------------------------------------------------------- responses

api_response json_response(int status, const json& body) {
  api_response r;
  r.status = status;
  r.body = body.dump();
  return r;
}

std::string_view status_title(int status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 503:
      return "Service Unavailable";
    default:
      return "Error";
  }
}

api_response problem(int status, std::string_view detail, json extra = json::object()) {
  json body = {{"type", "about:blank"},
               {"title", status_title(status)},
               {"status", status},
               {"detail", detail}};
  for (auto& [k, v] : extra.items()) body[k] = v;
  api_response r;
  r.status = status;
  r.content_type = "application/problem+json";
  r.body = body.dump();
  return r;
}

// The one answer for anything the caller may not see or that does not exist: the same status,
// body and work whichever it is, so that nothing of another tenant can be told apart.
api_response not_found() { return problem(404, "no such resource"); }

// ------------------------------------------------------------------------- request parts

std::optional<std::string> percent_decode(std::string_view in, bool plus_is_space) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size() || !std::isxdigit(static_cast<unsigned char>(in[i + 1])) ||
          !std::isxdigit(static_cast<unsigned char>(in[i + 2]))) {
        return std::nullopt;
      }
      out += static_cast<char>(std::stoi(std::string(in.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += plus_is_space && c == '+' ? ' ' : c;
    }
  }
  return out;
}

struct target_parts {
  std::vector<std::string> segments;  // after /v1/
  std::map<std::string, std::string> query;
  bool ok = true;
};

target_parts split_target(std::string_view target) {
  target_parts t;
  const size_t q = target.find('?');
  std::string_view path = target.substr(0, q);
  if (q != std::string_view::npos) {
    std::string_view rest = target.substr(q + 1);
    while (!rest.empty()) {
      const size_t amp = rest.find('&');
      std::string_view pair = rest.substr(0, amp);
      rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
      if (pair.empty()) continue;
      const size_t eq = pair.find('=');
      auto k = percent_decode(pair.substr(0, eq), true);
      auto v = percent_decode(eq == std::string_view::npos ? "" : pair.substr(eq + 1), true);
      if (!k || !v) {
        t.ok = false;
        return t;
      }
      t.query.emplace(*k, *v);
    }
  }
  if (!path.starts_with("/v1/")) {
    t.ok = false;
    return t;
  }
  path.remove_prefix(4);
  while (true) {
    const size_t slash = path.find('/');
    auto seg = percent_decode(path.substr(0, slash), false);
    if (!seg || seg->empty()) {
      t.ok = false;
      return t;
    }
    t.segments.push_back(*seg);
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return t;
}

// Depth of objects and arrays, counted without parsing (strings skipped).
int json_depth(std::string_view s) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"')
      in_string = true;
    else if (c == '{' || c == '[')
      deepest = std::max(deepest, ++depth);
    else if (c == '}' || c == ']')
      --depth;
  }
  return deepest;
}

// The body as a JSON object, or the problem to answer. An empty body is {} if allowed.
std::variant<json, api_response> json_body(const api_request& req, bool empty_ok = false) {
  if (req.body.empty() && empty_ok) return json::object();
  std::string type = ascii_lower(req.header("content-type"));
  type = type.substr(0, type.find(';'));
  while (!type.empty() && type.back() == ' ') type.pop_back();
  if (type != "application/json") {
    return problem(415, "send the body as application/json");
  }
  if (json_depth(req.body) > api_limits::json_depth_max) {
    return problem(400, fmt::format("the body nests deeper than json_depth_max ({} levels)",
                                    api_limits::json_depth_max));
  }
  json j = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return problem(400, "the body is not valid JSON");
  if (!j.is_object()) return problem(400, "the body must be a JSON object");
  return j;
}

// Fields of a body beyond `known` are refused: a misspelt field is not silently ignored.
std::optional<api_response> unknown_fields(const json& j,
                                           std::initializer_list<std::string_view> known) {
  for (auto& [k, v] : j.items()) {
    bool found = false;
    for (std::string_view n : known) found = found || n == k;
    if (!found) return problem(400, fmt::format("unknown field '{}'", k.substr(0, 64)));
  }
  return std::nullopt;
}

std::optional<std::string> string_field(const json& j, const char* name) {
  if (!j.contains(name) || !j[name].is_string()) return std::nullopt;
  return j[name].get<std::string>();
}

std::optional<int64_t> int_param(const std::map<std::string, std::string>& q,
                                 const std::string& name, int64_t lo, int64_t hi, bool& bad) {
  auto it = q.find(name);
  if (it == q.end()) return std::nullopt;
  const std::string& v = it->second;
  if (v.empty() || v.size() > 18 || v.find_first_not_of("0123456789") != std::string::npos) {
    bad = true;
    return std::nullopt;
  }
  const int64_t n = std::stoll(v);
  if (n < lo || n > hi) bad = true;
  return n;
}

json parse_or_string(std::string_view text) {
  if (text.empty()) return nullptr;
  json j = json::parse(text, nullptr, false);
  return j.is_discarded() ? json(std::string(text)) : j;
}

// ------------------------------------------------------------------------ rate limiting

class rate_limiter {
 public:
  // 0 if a token was taken; otherwise the seconds until one is there.
  int64_t take(const std::string& credential, double rate, double burst) {
    std::lock_guard lock(_mu);
    const auto now = clock_type::now();
    auto [it, fresh] = _buckets.try_emplace(credential, bucket{burst, now});
    bucket& b = it->second;
    if (!fresh) {
      b.tokens =
          std::min(burst, b.tokens + rate * std::chrono::duration<double>(now - b.at).count());
      b.at = now;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return std::max<int64_t>(1, static_cast<int64_t>(std::ceil((1 - b.tokens) / rate)));
  }

 private:
  struct bucket {
    double tokens;
    clock_type::time_point at;
  };
  std::mutex _mu;
  std::unordered_map<std::string, bucket> _buckets;
};

// ---------------------------------------------------------------------- ingress batching

class ingress_batcher {
 public:
  using done_fn = std::function<void(const result<void>&)>;

  ingress_batcher(log& l) : _log(l) {
    for (uint32_t p = 0; p < l.partition_count(); ++p) {
      _parts.push_back(std::make_unique<part>());
    }
    for (uint32_t p = 0; p < _parts.size(); ++p) {
      _parts[p]->thread = std::thread([this, p] { run(p); });
    }
  }
  ~ingress_batcher() {
    for (auto& pt : _parts) {
      {
        std::lock_guard lock(pt->mu);
        pt->stopping = true;
      }
      pt->cv.notify_all();
    }
    for (auto& pt : _parts) pt->thread.join();
  }

  // False if the partition's queue is full (ingress_queue_records_max).
  bool submit(std::string tenant, std::string bytes, done_fn done) {
    part& pt = *_parts[tenant_partition(tenant, _log.partition_count())];
    {
      std::lock_guard lock(pt.mu);
      if (pt.stopping || pt.queue.size() >= api_limits::ingress_queue_records_max) return false;
      pt.queue.push_back({std::move(tenant), std::move(bytes), std::move(done)});
    }
    pt.cv.notify_one();
    return true;
  }

 private:
  struct item {
    std::string tenant;
    std::string bytes;
    done_fn done;
  };
  struct part {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<item> queue;
    bool stopping = false;
    std::thread thread;
  };

  void run(uint32_t p) {
    part& pt = *_parts[p];
    std::vector<item> batch;
    for (;;) {
      {
        std::unique_lock lock(pt.mu);
        pt.cv.wait(lock, [&] { return pt.stopping || !pt.queue.empty(); });
        if (pt.queue.empty()) return;  // stopping
        while (!pt.queue.empty() && batch.size() < api_limits::ingress_batch_records_max) {
          batch.push_back(std::move(pt.queue.front()));
          pt.queue.pop_front();
        }
      }
      commit_batch b;
      for (item& it : batch) b.add(stream::ingress, it.tenant, std::move(it.bytes));
      auto r = _log.commit(p, b);
      const result<void> outcome = r ? result<void>{} : result<void>(std::unexpected(r.error()));
      for (item& it : batch) it.done(outcome);
      batch.clear();
    }
  }

  log& _log;
  std::vector<std::unique_ptr<part>> _parts;
};

// ---------------------------------------------------------------------- decision watcher

// Tails executions and answers the requests waiting for the orchestrator's decision on their
// command (the record whose causation id is the command's record id), or for their deadline.
// Only partitions with waiters are read: each starts where executions ended when its first
// waiter registered (before its command was submitted, so its decision lies past that point);
// an idle watcher reads nothing and asks the log nothing (on Kafka: no broker round trips).
class decision_watcher {
 public:
  struct waiter {
    api_responder respond;
    clock_type::time_point deadline;
    std::function<api_response(const fbs::Envelope&)> decided;
    std::function<api_response()> pending;
    uint32_t partition = 0;
  };

  explicit decision_watcher(log& l) : _log(l), _parts(l.partition_count()) {
    _thread = std::thread([this] { run(); });
  }
  ~decision_watcher() {
    _stopping = true;
    _thread.join();
    // Whoever still waits hears "pending": the command is in the log.
    for (auto& [id, w] : _waiters) w.respond(w.pending());
  }

  // Registers before the command is submitted; false if the log cannot tell where executions
  // ends (Kafka: no broker answer), and then nobody waits.
  bool add(const std::string& record_id, waiter w) {
    const uint32_t p = w.partition;
    std::optional<uint64_t> start;
    {
      std::lock_guard lock(_mu);
      if (_parts[p].waiters > 0) {
        _parts[p].waiters++;
        _waiters.emplace(record_id, std::move(w));
        return true;
      }
    }
    auto end = _log.end_offset(stream::executions, p);
    if (!end) return false;
    std::lock_guard lock(_mu);
    part& pt = _parts[p];
    if (pt.waiters == 0) pt.pos = *end;  // otherwise another waiter started it earlier
    pt.waiters++;
    _waiters.emplace(record_id, std::move(w));
    return true;
  }

  std::optional<waiter> remove(const std::string& record_id) {
    std::lock_guard lock(_mu);
    return remove_locked(record_id);
  }

 private:
  struct part {
    uint64_t pos = 0;    // next executions offset to read; meaningful while waiters > 0
    size_t waiters = 0;  // guarded by _mu
  };

  std::optional<waiter> remove_locked(const std::string& record_id) {
    auto it = _waiters.find(record_id);
    if (it == _waiters.end()) return std::nullopt;
    waiter w = std::move(it->second);
    _waiters.erase(it);
    _parts[w.partition].waiters--;
    return w;
  }

  void run() {
    std::vector<record> recs;
    while (!_stopping) {
      const uint64_t gen = _log.generation_any();
      bool read_any = false;
      for (uint32_t p = 0; p < _parts.size(); ++p) {
        uint64_t from;
        {
          std::lock_guard lock(_mu);
          if (_parts[p].waiters == 0) continue;
          from = _parts[p].pos;
        }
        recs.clear();
        auto n = _log.read(stream::executions, p, from, 1024, 8 << 20, recs);
        if (!n || *n == 0) continue;
        read_any = true;
        {
          std::lock_guard lock(_mu);
          _parts[p].pos = std::max(_parts[p].pos, recs.back().offset + 1);
        }
        for (const record& r : recs) dispatch(r);
      }
      expire();
      if (!read_any) _log.wait_any(gen, std::chrono::milliseconds(20));
    }
  }

  void dispatch(const record& r) {
    const fbs::Envelope* env = decode_envelope(r.value);
    if (!env || !env->causation_id()) return;
    auto w = remove(std::string(sv(env->causation_id())));
    if (w) w->respond(w->decided(*env));
  }

  void expire() {
    const auto now = clock_type::now();
    if (now < _next_expiry) return;
    _next_expiry = now + std::chrono::milliseconds(10);
    std::vector<waiter> due;
    {
      std::lock_guard lock(_mu);
      for (auto it = _waiters.begin(); it != _waiters.end();) {
        if (it->second.deadline <= now) {
          _parts[it->second.partition].waiters--;
          due.push_back(std::move(it->second));
          it = _waiters.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (waiter& w : due) w.respond(w.pending());
  }

  log& _log;
  std::mutex _mu;
  std::vector<part> _parts;
  std::unordered_map<std::string, waiter> _waiters;
  clock_type::time_point _next_expiry{};
  std::atomic<bool> _stopping{false};
  std::thread _thread;
};

std::string random_prefix() {
  unsigned char raw[4];
  if (RAND_bytes(raw, sizeof raw) != 1) std::abort();
  return hex(raw, sizeof raw);
}

}  // namespace

// ------------------------------------------------------------------------------ the service

struct api_server::impl {
  engine_access& engine;
  api_options options;
  clock& clk;
  std::unique_ptr<key_store> keys;
  std::unique_ptr<jwt_verifier> jwt;
  rate_limiter limiter;
  std::unique_ptr<ingress_batcher> batcher;
  std::unique_ptr<decision_watcher> watcher;
  std::unique_ptr<http_server> server;
  std::atomic<size_t> streams{0};
  const std::string nonce_prefix = random_prefix();
  std::atomic<uint64_t> nonce{0};

  impl(engine_access& e, api_options o, clock& c) : engine(e), options(std::move(o)), clk(c) {}

  void handle(api_request&& req, api_responder respond);
  void route(const api_request& req, const target_parts& t, const principal& who,
             api_responder respond);
  std::optional<principal> authenticate(const api_request& req);

  // Commands.
  void submit(const principal& who, std::string tenant, std::string bytes, int64_t wait_ms,
              api_response accepted, std::function<api_response(const fbs::Envelope&)> decided,
              api_responder respond, std::string record_id);
  std::string record_id_for(const principal& who) {
    return fmt::format("api:{}:{}-{}", who.credential, nonce_prefix, nonce.fetch_add(1));
  }
  void start(const api_request& req, const target_parts& t, const principal& who,
             const std::string& tenant, api_responder respond);
  void publish(const api_request& req, const target_parts& t, const principal& who,
               const std::string& tenant, api_responder respond);
  void put_policy(const api_request& req, const target_parts& t, const principal& who,
                  const std::string& tenant, api_responder respond);
  void signal(const api_request& req, const target_parts& t, const principal& who,
              const std::string& tenant, const std::string& id, api_responder respond);
  void cancel(const api_request& req, const target_parts& t, const principal& who,
              const std::string& tenant, const std::string& id, api_responder respond);
  void move(const api_request& req, const target_parts& t, const principal& who,
            const std::string& tenant, api_responder respond);
  api_response partitions_route(const api_request& req, const target_parts& t,
                                const principal& who);

  // Reads.
  std::optional<api_response> read_store(const std::string& tenant,
                                         const std::function<api_response(const state_store&)>&);
  api_response get_execution(const std::string& tenant, const std::string& id);
  api_response list_executions(const target_parts& t, const std::string& tenant);
  api_response list_definitions(const std::string& tenant);
  api_response get_definition(const std::string& tenant, const std::string& workflow);
  api_response get_definition_version(const std::string& tenant, const std::string& workflow,
                                      const std::string& version);
  api_response get_policy(const std::string& tenant);
  api_response get_placement(const std::string& tenant);
  api_response timeline_json(const std::string& tenant, const std::string& id);
  api_response timeline_html(const std::string& tenant, const std::string& id);
  api_response events(const api_request& req, const target_parts& t, const std::string& tenant,
                      const std::string& id);

  std::optional<execution_state> load_execution(const std::string& tenant, const std::string& id);
  // Where the tenant lives now: its default partition, then the placement entries of the
  // partitions it moved away from, one hop each (docs/tenant-moves.md). `path` is every
  // partition on the way (the last is where it lives), `entry` the placement entry there (none
  // for a tenant on its default partition, or one whose state has not arrived yet).
  struct tenant_place {
    std::vector<uint32_t> path;
    std::optional<placement_entry> entry;
  };
  tenant_place place_of(std::string_view tenant) const {
    tenant_place out;
    uint32_t p = home_partition(engine.events(), tenant);
    for (uint32_t hops = 0; hops <= engine.partitions(); ++hops) {
      out.path.push_back(p);
      out.entry.reset();
      engine.with_store(p, [&](const state_store& s) {
        auto placed = s.get(keys::placement(tenant));
        placement_entry where;
        if (placed && *placed && decode_placement(**placed, where)) out.entry = where;
      });
      if (!out.entry || out.entry->ph != placement_entry::phase::moved_out) break;
      p = out.entry->partition;
    }
    return out;
  }
  uint32_t partition_of(std::string_view tenant) const { return place_of(tenant).path.back(); }
  // An event index entry: the offset in the tenant's partition `p`, or, for the events from
  // before a move, the partition and offset where they were written (12 bytes).
  struct event_ref {
    uint32_t partition;
    uint64_t offset;
  };
  static event_ref index_entry(std::string_view v, uint32_t p) {
    return {v.size() == 12 ? keys::get_be32(v.substr(8)) : p, keys::get_be64(v)};
  }
};

std::optional<principal> api_server::impl::authenticate(const api_request& req) {
  const std::string h = req.header("authorization");
  if (h.size() < 8 || ascii_lower(h.substr(0, 7)) != "bearer ") return std::nullopt;
  std::string_view token = std::string_view(h).substr(7);
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  if (token.starts_with("ak_")) return keys ? keys->authenticate(token) : std::nullopt;
  if (!jwt) return std::nullopt;
  auto p = jwt->verify(token, clk.now_ms() / 1000);
  if (!p) return std::nullopt;
  return *p;
}

void api_server::impl::handle(api_request&& req, api_responder respond) {
  target_parts t = split_target(req.target);
  const auto& seg = t.segments;
  const bool get = req.method == "GET";
  if (t.ok && seg.size() == 1 &&
      (seg[0] == "health" || seg[0] == "ready" || seg[0] == "openapi.json")) {
    if (!get) {
      api_response r = problem(405, "use GET");
      r.headers.emplace_back("Allow", "GET");
      return respond(std::move(r));
    }
    if (seg[0] == "health") return respond(json_response(200, {{"status", "ok"}}));
    if (seg[0] == "ready") {
      if (!engine.ready()) return respond(problem(503, "the engine is recovering"));
      return respond(json_response(200, {{"status", "ready"}}));
    }
    api_response r;
    r.body = std::string(openapi_document());
    return respond(std::move(r));
  }
  const bool partitions = t.ok && !seg.empty() && seg[0] == "partitions" &&
                          (seg.size() == 1 || (seg.size() == 2 && seg[1] == "scale"));
  if (!partitions && (!t.ok || seg.size() < 2 || seg[0] != "tenants")) return respond(not_found());
  auto who = authenticate(req);
  if (!who) {
    api_response r = problem(401, "a valid API key or bearer token is required");
    r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"auterity\"");
    return respond(std::move(r));
  }
  if (int64_t wait_s = limiter.take(who->credential, options.rate_per_s, options.rate_burst)) {
    api_response r = problem(429, fmt::format("rate limit of {:.0f} requests/s for this credential",
                                              options.rate_per_s));
    r.headers.emplace_back("Retry-After", std::to_string(wait_s));
    return respond(std::move(r));
  }
  if (partitions) return respond(partitions_route(req, t, *who));
  route(req, t, *who, std::move(respond));
}

// GET /v1/partitions (any role with a key for every tenant) and POST /v1/partitions/scale
// (admin, every tenant): the deployment's partitions, not one tenant's.
api_response api_server::impl::partitions_route(const api_request& req, const target_parts& t,
                                                const principal& who) {
  const bool scale = t.segments.size() == 2;
  const std::string allow = scale ? "POST" : "GET";
  if (req.method != allow) {
    api_response r = problem(405, fmt::format("use {}", allow));
    r.headers.emplace_back("Allow", allow);
    return r;
  }
  if (who.tenant != any_tenant) {
    return problem(403, "the deployment's partitions need a key for every tenant");
  }
  if (!role_allows(who.role, scale ? api_action::move : api_action::read)) {
    return problem(403, fmt::format("the role {} may not do this", role_name(who.role)));
  }
  if (scale) {
    json body = json::parse(req.body, nullptr, false);
    if (!body.is_object() || !body.contains("to") || !body["to"].is_number_unsigned() ||
        body.size() != 1) {
      return problem(400, "body: {\"to\": partitions taking tenants afterwards}");
    }
    const uint64_t to = body["to"].get<uint64_t>();
    if (to < 1 || to > api_limits::scale_partitions_max) {
      return problem(400, fmt::format("to: 1 to {} partitions", api_limits::scale_partitions_max));
    }
    auto r = engine.request_scale(static_cast<uint32_t>(to));
    if (!r) {
      return problem(r.error().code == errc::locked ? 409 : 422, r.error().message);
    }
  }
  const placement_header h = engine.events().placement();
  const engine_access::scale_status s = engine.scale();
  json out = {{"partitions", engine.partitions()},
              {"base", h.base},
              {"retired", h.retired},
              {"scale", {{"state", s.state}, {"to", s.to}, {"message", s.message}}}};
  api_response r = json_response(scale ? 202 : 200, out);
  if (scale) r.headers.emplace_back("Location", "/v1/partitions");
  return r;
}

void api_server::impl::route(const api_request& req, const target_parts& t, const principal& who,
                             api_responder respond) {
  const auto& seg = t.segments;
  const std::string& m = req.method;
  // Which route and action; the method decides between reading and writing.
  enum class kind {
    none,
    definitions,
    definition,
    definition_version,
    policy,
    executions,
    execution,
    signals,
    cancel,
    timeline,
    timeline_html,
    events,
    move,
    placement
  };
  kind k = kind::none;
  const size_t n = seg.size();
  if (n == 3 && seg[2] == "definitions") k = kind::definitions;
  if (n == 4 && seg[2] == "definitions") k = kind::definition;
  if (n == 6 && seg[2] == "definitions" && seg[4] == "versions") k = kind::definition_version;
  if (n == 3 && seg[2] == "policy") k = kind::policy;
  if (n == 3 && seg[2] == "move") k = kind::move;
  if (n == 3 && seg[2] == "placement") k = kind::placement;
  if (n == 3 && seg[2] == "executions") k = kind::executions;
  if (n == 4 && seg[2] == "executions") k = kind::execution;
  if (n == 5 && seg[2] == "executions") {
    if (seg[4] == "signals") k = kind::signals;
    if (seg[4] == "cancel") k = kind::cancel;
    if (seg[4] == "timeline") k = kind::timeline;
    if (seg[4] == "timeline.html") k = kind::timeline_html;
    if (seg[4] == "events") k = kind::events;
  }
  if (k == kind::none) return respond(not_found());
  // Allowed methods per route.
  std::string allow = "GET";
  if (k == kind::definitions || k == kind::executions) allow = "GET, POST";
  if (k == kind::policy) allow = "GET, PUT";
  if (k == kind::signals || k == kind::cancel || k == kind::move) allow = "POST";
  bool allowed = false;
  for (std::string_view a : {"GET", "POST", "PUT"}) {
    allowed = allowed || (m == a && allow.find(a) != std::string::npos);
  }
  if (!allowed) {
    api_response r = problem(405, fmt::format("use {}", allow));
    r.headers.emplace_back("Allow", allow);
    return respond(std::move(r));
  }
  // Tenant before anything else: another tenant's resources do not exist for this caller.
  const std::string& tenant = seg[1];
  if (!ids::valid_name(tenant) || !who.may_access(tenant)) return respond(not_found());
  api_action action = api_action::read;
  if (m != "GET") {
    if (k == kind::executions) action = api_action::start;
    if (k == kind::signals) action = api_action::signal;
    if (k == kind::cancel) action = api_action::cancel;
    if (k == kind::definitions || k == kind::policy) action = api_action::publish;
    if (k == kind::move) action = api_action::move;
  }
  if (!role_allows(who.role, action)) {
    return respond(problem(403, fmt::format("the role {} may not do this", role_name(who.role))));
  }
  // Reads need the tenant's partition state here (a gateway on Kafka has none): say so
  // rather than "not found".
  if (action == api_action::read &&
      !engine.with_store(partition_of(tenant), [](const state_store&) {})) {
    api_response r = problem(503, "the tenant's partition is not served by this process");
    r.headers.emplace_back("Retry-After", "1");
    return respond(std::move(r));
  }
  // Ids in the path follow the engine's name rule; anything else cannot exist.
  for (size_t i = 3; i < n; i += 2) {
    if (!ids::valid_name(seg[i])) return respond(not_found());
  }
  switch (k) {
    case kind::definitions:
      if (m == "POST") return publish(req, t, who, tenant, std::move(respond));
      return respond(list_definitions(tenant));
    case kind::definition:
      return respond(get_definition(tenant, seg[3]));
    case kind::definition_version:
      return respond(get_definition_version(tenant, seg[3], seg[5]));
    case kind::policy:
      if (m == "PUT") return put_policy(req, t, who, tenant, std::move(respond));
      return respond(get_policy(tenant));
    case kind::executions:
      if (m == "POST") return start(req, t, who, tenant, std::move(respond));
      return respond(list_executions(t, tenant));
    case kind::execution:
      return respond(get_execution(tenant, seg[3]));
    case kind::signals:
      return signal(req, t, who, tenant, seg[3], std::move(respond));
    case kind::cancel:
      return cancel(req, t, who, tenant, seg[3], std::move(respond));
    case kind::timeline:
      return respond(timeline_json(tenant, seg[3]));
    case kind::timeline_html:
      return respond(timeline_html(tenant, seg[3]));
    case kind::events:
      return respond(events(req, t, tenant, seg[3]));
    case kind::move:
      return move(req, t, who, tenant, std::move(respond));
    case kind::placement:
      return respond(get_placement(tenant));
    case kind::none:
      break;
  }
  respond(not_found());
}

// ------------------------------------------------------------------------------ commands

namespace {

// The answer to a rejection of the caller's command: its stable name, code and reason.
api_response rejected(const fbs::CommandRejected& r) {
  const auto code = static_cast<rejection_code>(r.code());
  int status = 422;
  if (code == rejection_code::duplicate_execution || code == rejection_code::version_conflict ||
      code == rejection_code::execution_finished) {
    status = 409;
  }
  if (code == rejection_code::unknown_execution) status = 404;
  return problem(
      status, fmt::format("rejected: {}", sv(r.reason())),
      {{"rejection",
        {{"name", rejection_code_name(code)}, {"code", r.code()}, {"reason", sv(r.reason())}}}});
}

std::optional<int64_t> wait_of(const target_parts& t, api_response& bad) {
  bool invalid = false;
  auto w = int_param(t.query, "wait_ms", 0, INT64_MAX / 2, invalid);
  if (invalid) {
    bad = problem(400, "wait_ms: a number of milliseconds");
    return std::nullopt;
  }
  return std::min<int64_t>(w.value_or(0), api_limits::wait_ms_max);
}

}  // namespace

void api_server::impl::submit(const principal&, std::string tenant, std::string bytes,
                              int64_t wait_ms, api_response accepted,
                              std::function<api_response(const fbs::Envelope&)> decided,
                              api_responder respond, std::string record_id) {
  if (wait_ms > 0) {
    api_response pending = accepted;
    decision_watcher::waiter w;
    w.respond = respond;
    w.deadline = clock_type::now() + std::chrono::milliseconds(wait_ms);
    w.decided = std::move(decided);
    w.pending = [pending] { return pending; };
    w.partition = partition_of(tenant);
    if (!watcher->add(record_id, std::move(w))) {
      api_response p = problem(503, "the log did not answer; try again");
      p.headers.emplace_back("Retry-After", "1");
      return respond(std::move(p));
    }
  }
  const bool queued = batcher->submit(
      std::move(tenant), std::move(bytes),
      [this, wait_ms, accepted, respond, record_id](const result<void>& r) {
        if (!r) {
          if (wait_ms > 0) watcher->remove(record_id);
          fmt::print(stderr, "auterity: api: ingress commit failed: {}\n", r.error().message);
          api_response p = problem(503, "the command could not be written; try again");
          p.headers.emplace_back("Retry-After", "1");
          return respond(std::move(p));
        }
        if (wait_ms == 0) respond(accepted);
      });
  if (!queued) {
    if (wait_ms > 0 && !watcher->remove(record_id)) return;
    api_response p = problem(503, "too many commands waiting for their commit; try again");
    p.headers.emplace_back("Retry-After", "1");
    respond(std::move(p));
  }
}

void api_server::impl::start(const api_request& req, const target_parts& t, const principal& who,
                             const std::string& tenant, api_responder respond) {
  auto body = json_body(req);
  if (auto* p = std::get_if<api_response>(&body)) return respond(std::move(*p));
  const json& j = std::get<json>(body);
  if (auto p = unknown_fields(j, {"execution_id", "workflow", "version", "input"})) {
    return respond(std::move(*p));
  }
  auto id = string_field(j, "execution_id");
  auto workflow = string_field(j, "workflow");
  if (!id || !ids::valid_name(*id)) {
    return respond(problem(400, fmt::format("execution_id: {}", ids::name_rule)));
  }
  if (!workflow || !ids::valid_name(*workflow)) {
    return respond(problem(400, fmt::format("workflow: {}", ids::name_rule)));
  }
  uint32_t version = 0;
  if (j.contains("version")) {
    if (!j["version"].is_number_unsigned() || j["version"].get<uint64_t>() > UINT32_MAX) {
      return respond(problem(400, "version: a number from 0 (the latest) up"));
    }
    version = j["version"].get<uint32_t>();
  }
  json input = j.contains("input") ? j["input"] : json::object();
  if (!input.is_object()) return respond(problem(400, "input: a JSON object"));
  api_response bad;
  auto wait_ms = wait_of(t, bad);
  if (!wait_ms) return respond(std::move(bad));
  const std::string rid = record_id_for(who);
  const std::string input_text = input.dump();
  const std::string location = fmt::format("/v1/tenants/{}/executions/{}", tenant, *id);
  api_response accepted =
      json_response(202, {{"execution_id", *id}, {"outcome", "pending"}, {"request_id", rid}});
  accepted.headers.emplace_back("Location", location);
  auto decided = [this, tenant, id = *id, workflow = *workflow, version, input, location,
                  rid](const fbs::Envelope& env) {
    auto ok = [&](int status, bool duplicate) {
      json b = {{"execution_id", id}, {"outcome", "accepted"}, {"request_id", rid}};
      if (duplicate) b["duplicate"] = true;
      api_response r = json_response(status, b);
      r.headers.emplace_back("Location", location);
      return r;
    };
    if (env.payload_type() == fbs::Payload::ExecutionStarted) return ok(201, false);
    if (auto* r = env.payload_as_CommandRejected()) {
      // Idempotent: the same start again finds its execution, and is answered as it was.
      if (static_cast<rejection_code>(r->code()) == rejection_code::duplicate_execution) {
        auto e = load_execution(tenant, id);
        if (e && e->workflow == workflow && (version == 0 || e->version == version) &&
            parse_or_string(e->input_json) == input) {
          return ok(200, true);
        }
      }
      return rejected(*r);
    }
    return ok(201, false);
  };
  submit(who, tenant,
         client::start_execution({tenant, *id, rid, clk.now_ms()}, *workflow, version, input_text),
         *wait_ms, std::move(accepted), std::move(decided), std::move(respond), rid);
}

void api_server::impl::publish(const api_request& req, const target_parts& t, const principal& who,
                               const std::string& tenant, api_responder respond) {
  auto body = json_body(req);
  if (auto* p = std::get_if<api_response>(&body)) return respond(std::move(*p));
  const json& j = std::get<json>(body);
  if (auto p = unknown_fields(j, {"definition", "params"})) return respond(std::move(*p));
  if (!j.contains("definition") || !j["definition"].is_object()) {
    return respond(problem(400,
                           "definition: the workflow definition, a JSON object "
                           "(processors/DEFINITIONS.md)"));
  }
  if (j.contains("params") && !j["params"].is_object()) {
    return respond(problem(400, "params: a JSON object"));
  }
  api_response bad;
  auto wait_ms = wait_of(t, bad);
  if (!wait_ms) return respond(std::move(bad));
  const std::string rid = record_id_for(who);
  api_response accepted = json_response(202, {{"outcome", "pending"}, {"request_id", rid}});
  auto decided = [tenant, rid](const fbs::Envelope& env) {
    if (auto* r = env.payload_as_CommandRejected()) return rejected(*r);
    json b = {{"outcome", "accepted"}, {"request_id", rid}};
    if (auto* d = env.payload_as_DefinitionPublished()) {
      b["workflow"] = sv(d->workflow());
      b["version"] = d->version();
      api_response r = json_response(201, b);
      r.headers.emplace_back("Location", fmt::format("/v1/tenants/{}/definitions/{}/versions/{}",
                                                     tenant, sv(d->workflow()), d->version()));
      return r;
    }
    return json_response(200, b);
  };
  const std::string params = j.contains("params") ? j["params"].dump() : std::string();
  submit(
      who, tenant,
      client::publish_definition({tenant, "", rid, clk.now_ms()}, j["definition"].dump(), params),
      *wait_ms, std::move(accepted), std::move(decided), std::move(respond), rid);
}

void api_server::impl::put_policy(const api_request& req, const target_parts& t,
                                  const principal& who, const std::string& tenant,
                                  api_responder respond) {
  auto body = json_body(req);
  if (auto* p = std::get_if<api_response>(&body)) return respond(std::move(*p));
  api_response bad;
  auto wait_ms = wait_of(t, bad);
  if (!wait_ms) return respond(std::move(bad));
  const std::string rid = record_id_for(who);
  api_response accepted = json_response(202, {{"outcome", "pending"}, {"request_id", rid}});
  auto decided = [rid](const fbs::Envelope& env) {
    if (auto* r = env.payload_as_CommandRejected()) return rejected(*r);
    json b = {{"outcome", "accepted"}, {"request_id", rid}};
    if (auto* p = env.payload_as_TenantPolicyPublished()) b["version"] = p->version();
    return json_response(200, b);
  };
  submit(who, tenant,
         client::publish_policy({tenant, "", rid, clk.now_ms()}, std::get<json>(body).dump()),
         *wait_ms, std::move(accepted), std::move(decided), std::move(respond), rid);
}

void api_server::impl::signal(const api_request& req, const target_parts& t, const principal& who,
                              const std::string& tenant, const std::string& id,
                              api_responder respond) {
  auto body = json_body(req);
  if (auto* p = std::get_if<api_response>(&body)) return respond(std::move(*p));
  const json& j = std::get<json>(body);
  if (auto p = unknown_fields(j, {"name", "payload"})) return respond(std::move(*p));
  auto name = string_field(j, "name");
  if (!name || !ids::valid_name(*name)) {
    return respond(problem(400, fmt::format("name: the signal's name; {}", ids::name_rule)));
  }
  api_response bad;
  auto wait_ms = wait_of(t, bad);
  if (!wait_ms) return respond(std::move(bad));
  const std::string rid = record_id_for(who);
  api_response accepted =
      json_response(202, {{"execution_id", id}, {"outcome", "pending"}, {"request_id", rid}});
  auto decided = [id, rid](const fbs::Envelope& env) {
    if (auto* r = env.payload_as_CommandRejected()) return rejected(*r);
    // Held: the execution's start has not arrived (yet); it is delivered or rejected later.
    const bool held = env.payload_type() == fbs::Payload::SignalHeld;
    return json_response(
        held ? 202 : 200,
        {{"execution_id", id}, {"outcome", held ? "held" : "accepted"}, {"request_id", rid}});
  };
  const std::string payload = j.contains("payload") ? j["payload"].dump() : std::string("{}");
  submit(who, tenant, client::signal({tenant, id, rid, clk.now_ms()}, *name, payload), *wait_ms,
         std::move(accepted), std::move(decided), std::move(respond), rid);
}

void api_server::impl::cancel(const api_request& req, const target_parts& t, const principal& who,
                              const std::string& tenant, const std::string& id,
                              api_responder respond) {
  auto body = json_body(req, /*empty_ok=*/true);
  if (auto* p = std::get_if<api_response>(&body)) return respond(std::move(*p));
  const json& j = std::get<json>(body);
  if (auto p = unknown_fields(j, {"reason"})) return respond(std::move(*p));
  std::string reason = "cancelled through the API";
  if (j.contains("reason")) {
    if (!j["reason"].is_string() || j["reason"].get<std::string>().size() > 1024) {
      return respond(problem(400, "reason: a string of at most 1024 bytes"));
    }
    reason = j["reason"].get<std::string>();
  }
  api_response bad;
  auto wait_ms = wait_of(t, bad);
  if (!wait_ms) return respond(std::move(bad));
  const std::string rid = record_id_for(who);
  api_response accepted =
      json_response(202, {{"execution_id", id}, {"outcome", "pending"}, {"request_id", rid}});
  auto decided = [id, rid](const fbs::Envelope& env) {
    if (auto* r = env.payload_as_CommandRejected()) return rejected(*r);
    return json_response(200, {{"execution_id", id}, {"outcome", "accepted"}, {"request_id", rid}});
  };
  submit(who, tenant, client::cancel({tenant, id, rid, clk.now_ms()}, reason), *wait_ms,
         std::move(accepted), std::move(decided), std::move(respond), rid);
}

// A tenant's move (docs/tenant-moves.md): a MoveTenant command on ingress, decided by the
// partition the tenant lives on. Its decision is TenantMovedOut there (the state has left for
// the target in the same commit; the target installs it when it reads the chunks: GET
// placement shows `moving` until then) or the rejection (invalid_move and its reason).
void api_server::impl::move(const api_request& req, const target_parts& t, const principal& who,
                            const std::string& tenant, api_responder respond) {
  auto body = json_body(req);
  if (auto* p = std::get_if<api_response>(&body)) return respond(std::move(*p));
  const json& j = std::get<json>(body);
  if (auto p = unknown_fields(j, {"to"})) return respond(std::move(*p));
  // A partition that does not exist or is retired is the engine's to refuse (invalid_move,
  // with its reason), like every other refused move.
  if (!j.contains("to") || !j["to"].is_number_unsigned() || j["to"].get<uint64_t>() > UINT32_MAX) {
    return respond(problem(400, "to: the target partition, a number from 0"));
  }
  const auto to = j["to"].get<uint32_t>();
  api_response bad;
  auto wait_ms = wait_of(t, bad);
  if (!wait_ms) return respond(std::move(bad));
  const std::string rid = record_id_for(who);
  const std::string location = fmt::format("/v1/tenants/{}/placement", tenant);
  api_response accepted =
      json_response(202, {{"outcome", "pending"}, {"to", to}, {"request_id", rid}});
  accepted.headers.emplace_back("Location", location);
  auto decided = [rid, location](const fbs::Envelope& env) {
    if (auto* r = env.payload_as_CommandRejected()) return rejected(*r);
    json b = {{"outcome", "accepted"}, {"request_id", rid}};
    if (auto* m = env.payload_as_TenantMovedOut()) {
      b["to"] = m->to_partition();
      b["epoch"] = m->epoch();
      b["running_executions"] = m->executions();
      b["state_bytes"] = m->state_bytes();
      b["chunks"] = m->chunks();
    }
    api_response r = json_response(200, b);
    r.headers.emplace_back("Location", location);
    return r;
  };
  submit(who, tenant, client::move_tenant({tenant, "", rid, clk.now_ms()}, to), *wait_ms,
         std::move(accepted), std::move(decided), std::move(respond), rid);
}

// --------------------------------------------------------------------------------- reads

api_response api_server::impl::get_placement(const std::string& tenant) {
  const tenant_place at = place_of(tenant);
  const uint32_t p = at.path.back();
  const uint32_t home = at.path.front();
  // On its partition with no entry: its default partition (never moved), or a target whose
  // first chunk has not been read yet (the source's entry names it).
  const bool arriving = !at.entry && at.path.size() > 1;
  const bool installing = at.entry && at.entry->ph == placement_entry::phase::installing;
  uint32_t epoch = at.entry ? at.entry->epoch : 0;
  if (arriving) {
    engine.with_store(at.path[at.path.size() - 2], [&](const state_store& s) {
      auto placed = s.get(keys::placement(tenant));
      placement_entry where;
      if (placed && *placed && decode_placement(**placed, where)) epoch = where.epoch;
    });
  }
  return json_response(200, {{"tenant", tenant},
                             {"partition", p},
                             {"home", home},
                             {"epoch", epoch},
                             {"moving", arriving || installing},
                             {"path", at.path},
                             {"partitions", engine.partitions()},
                             {"retired", engine.events().placement().retired}});
}

std::optional<api_response> api_server::impl::read_store(
    const std::string& tenant, const std::function<api_response(const state_store&)>& fn) {
  std::optional<api_response> out;
  if (!engine.with_store(partition_of(tenant), [&](const state_store& s) { out = fn(s); })) {
    api_response r = problem(503, "the tenant's partition is not served by this process");
    r.headers.emplace_back("Retry-After", "1");
    return r;
  }
  return out;
}

std::optional<execution_state> api_server::impl::load_execution(const std::string& tenant,
                                                                const std::string& id) {
  std::optional<execution_state> out;
  engine.with_store(partition_of(tenant), [&](const state_store& s) {
    auto v = s.get(keys::execution(tenant, id));
    execution_state e;
    if (v && *v && decode_execution(**v, e)) out = std::move(e);
  });
  return out;
}

namespace {

std::vector<std::string> step_names(const state_store& s, const execution_state& e) {
  std::vector<std::string> names;
  auto v = s.get(keys::definition(e.tenant, e.workflow, e.version));
  if (!v || !*v) return names;
  json d = json::parse(**v, nullptr, false);
  if (!d.is_object() || !d.contains("steps") || !d["steps"].is_array()) return names;
  for (const json& st : d["steps"]) {
    names.push_back(st.is_object() && st.contains("id") && st["id"].is_string()
                        ? st["id"].get<std::string>()
                        : std::string());
  }
  return names;
}

json execution_summary(const execution_state& e) {
  json j = {{"execution_id", e.id},
            {"workflow", e.workflow},
            {"version", e.version},
            {"status", exec_status_name(e.status)},
            {"started_ms", e.started_ms},
            {"ended_ms", e.status == exec_status::running ? json(nullptr) : json(e.ended_ms)}};
  return j;
}

json execution_json(const execution_state& e, const std::vector<std::string>& names) {
  json j = execution_summary(e);
  j["tenant"] = e.tenant;
  j["events"] = e.event_count;
  j["input"] = parse_or_string(e.input_json);
  j["output"] = e.status == exec_status::succeeded ? parse_or_string(e.result) : json(nullptr);
  j["error"] = e.status == exec_status::failed || e.status == exec_status::cancelled
                   ? json(e.result)
                   : json(nullptr);
  json steps = json::array();
  json running = json::array();
  for (size_t i = 0; i < e.steps.size(); ++i) {
    const step_state& s = e.steps[i];
    const std::string name = i < names.size() ? names[i] : fmt::format("#{}", i);
    json st = {{"step", name}, {"status", step_status_name(s.status)}, {"attempt", s.attempt}};
    if (!s.output_json.empty()) st["output"] = parse_or_string(s.output_json);
    if (!s.error.empty()) st["error"] = s.error;
    const bool active = s.status == step_status::running || s.status == step_status::waiting ||
                        s.status == step_status::delaying || s.status == step_status::retry_wait ||
                        s.status == step_status::deferred;
    if (active && e.status == exec_status::running) running.push_back(name);
    steps.push_back(std::move(st));
  }
  j["steps"] = std::move(steps);
  j["running_steps"] = std::move(running);
  return j;
}

}  // namespace

api_response api_server::impl::get_execution(const std::string& tenant, const std::string& id) {
  return *read_store(tenant, [&](const state_store& s) {
    auto v = s.get(keys::execution(tenant, id));
    execution_state e;
    if (!v || !*v || !decode_execution(**v, e)) return not_found();
    return json_response(200, execution_json(e, step_names(s, e)));
  });
}

api_response api_server::impl::list_executions(const target_parts& t, const std::string& tenant) {
  bool bad = false;
  const int64_t limit =
      int_param(t.query, "limit", 1, api_limits::page_executions_max, bad).value_or(50);
  const auto after = int_param(t.query, "started_after", 0, INT64_MAX / 2, bad);
  const auto before = int_param(t.query, "started_before", 0, INT64_MAX / 2, bad);
  if (bad) {
    return problem(400, fmt::format("limit is 1 to {}; started_after and started_before are "
                                    "times in ms since the epoch",
                                    api_limits::page_executions_max));
  }
  std::optional<exec_status> status;
  if (auto it = t.query.find("status"); it != t.query.end()) {
    for (auto s : {exec_status::running, exec_status::succeeded, exec_status::failed,
                   exec_status::cancelled}) {
      if (exec_status_name(s) == it->second) status = s;
    }
    if (!status) return problem(400, "status: running, succeeded, failed or cancelled");
  }
  std::string workflow;
  if (auto it = t.query.find("workflow"); it != t.query.end()) workflow = it->second;
  std::string cursor;
  if (auto it = t.query.find("cursor"); it != t.query.end()) {
    auto c = base64url_decode(it->second);
    if (!c || !ids::valid_name(*c)) return problem(400, "cursor: as returned in next_cursor");
    cursor = *c;
  }
  return *read_store(tenant, [&](const state_store& s) {
    json out = json::array();
    std::string last;
    bool more = false;
    const std::string prefix = keys::tenant_prefix(tenant) + "E";
    (void)s.scan_prefix(prefix, [&](std::string_view key, std::string_view value) {
      const std::string_view id = key.substr(prefix.size());
      if (!cursor.empty() && id <= cursor) return true;  // keys sort by id: the page starts after
      execution_state e;
      if (!decode_execution(value, e)) return true;
      if ((status && e.status != *status) || (!workflow.empty() && e.workflow != workflow) ||
          (after && e.started_ms <= *after) || (before && e.started_ms >= *before)) {
        return true;
      }
      if (static_cast<int64_t>(out.size()) == limit) {
        more = true;
        return false;
      }
      out.push_back(execution_summary(e));
      last = std::string(id);
      return true;
    });
    return json_response(200, {{"executions", std::move(out)},
                               {"next_cursor", more ? json(base64url_encode(last)) : json()}});
  });
}

api_response api_server::impl::list_definitions(const std::string& tenant) {
  return *read_store(tenant, [&](const state_store& s) {
    std::map<std::string, std::vector<uint32_t>> found;
    const std::string prefix = keys::tenant_prefix(tenant) + "D";
    (void)s.scan_prefix(prefix, [&](std::string_view key, std::string_view) {
      const std::string_view rest = key.substr(prefix.size());
      const size_t nul = rest.find('\0');
      if (nul == std::string_view::npos || rest.size() != nul + 5) return true;
      found[std::string(rest.substr(0, nul))].push_back(keys::get_be32(rest.substr(nul + 1)));
      return true;
    });
    json out = json::array();
    for (auto& [w, versions] : found) {
      out.push_back({{"workflow", w}, {"versions", versions}, {"latest", versions.back()}});
    }
    return json_response(200, {{"definitions", std::move(out)}});
  });
}

api_response api_server::impl::get_definition(const std::string& tenant,
                                              const std::string& workflow) {
  return *read_store(tenant, [&](const state_store& s) {
    std::vector<uint32_t> versions;
    const std::string prefix = keys::tenant_prefix(tenant) + "D" + workflow + std::string(1, '\0');
    (void)s.scan_prefix(prefix, [&](std::string_view key, std::string_view) {
      if (key.size() == prefix.size() + 4)
        versions.push_back(keys::get_be32(key.substr(prefix.size())));
      return true;
    });
    if (versions.empty()) return not_found();
    return json_response(
        200, {{"workflow", workflow}, {"versions", versions}, {"latest", versions.back()}});
  });
}

api_response api_server::impl::get_definition_version(const std::string& tenant,
                                                      const std::string& workflow,
                                                      const std::string& version) {
  if (version.size() > 9 || version.find_first_not_of("0123456789") != std::string::npos) {
    return not_found();
  }
  const auto v = static_cast<uint32_t>(std::stoul(version));
  return *read_store(tenant, [&](const state_store& s) {
    auto d = s.get(keys::definition(tenant, workflow, v));
    if (!d || !*d) return not_found();
    return json_response(
        200, {{"workflow", workflow}, {"version", v}, {"definition", parse_or_string(**d)}});
  });
}

api_response api_server::impl::get_policy(const std::string& tenant) {
  return *read_store(tenant, [&](const state_store& s) {
    auto p = s.get(keys::policy(tenant));
    if (!p || !*p || (*p)->size() < 4) return not_found();
    return json_response(200, {{"version", keys::get_be32(**p)},
                               {"policy", parse_or_string(std::string_view(**p).substr(4))}});
  });
}

api_response api_server::impl::timeline_json(const std::string& tenant, const std::string& id) {
  const uint32_t p = partition_of(tenant);
  std::vector<event_ref> offsets;
  bool exists = false;
  auto r = read_store(tenant, [&](const state_store& s) {
    auto v = s.get(keys::execution(tenant, id));
    exists = v && *v;
    (void)s.scan_prefix(keys::event_index_prefix(tenant, id),
                        [&](std::string_view, std::string_view v) {
                          offsets.push_back(index_entry(v, p));
                          return offsets.size() < api_limits::timeline_events_max;
                        });
    return api_response{};
  });
  if (r->status != 200) return *r;
  if (!exists) return not_found();
  std::string body = fmt::format(R"({{"tenant":{},"execution_id":{},"events":[)",
                                 json(tenant).dump(), json(id).dump());
  std::vector<record> recs;
  bool first = true;
  for (const event_ref& at : offsets) {
    recs.clear();
    auto n = engine.history().read(stream::executions, at.partition, at.offset, 1, 1 << 20, recs);
    if (!n || *n == 0) continue;
    if (!first) body += ',';
    first = false;
    append_record_json(
        body, {stream::executions, at.partition, recs[0].offset, recs[0].key, recs[0].value});
  }
  body += "]}";
  api_response out;
  out.body = std::move(body);
  return out;
}

api_response api_server::impl::timeline_html(const std::string& tenant, const std::string& id) {
  if (!load_execution(tenant, id)) return not_found();
  timeline_options o;
  o.scope.tenant = tenant;
  o.scope.execution = id;
  o.format = timeline_format::html;
  o.threads = 1;
  o.title = fmt::format("{} / {}", tenant, id);
  o.scope_text = fmt::format("tenant {}, execution {}", tenant, id);
  char* buf = nullptr;
  size_t len = 0;
  std::FILE* f = open_memstream(&buf, &len);
  if (!f) return problem(503, "out of memory");
  auto r = write_timeline(engine.history(), o, f);
  std::fclose(f);
  std::string page(buf, len);
  std::free(buf);
  if (!r) return problem(503, "the timeline could not be read; try again");
  api_response out;
  out.content_type = "text/html; charset=utf-8";
  out.body = std::move(page);
  return out;
}

api_response api_server::impl::events(const api_request& req, const target_parts& t,
                                      const std::string& tenant, const std::string& id) {
  if (!load_execution(tenant, id)) return not_found();
  // Resume after the last event the client saw: Last-Event-ID (what browsers send on
  // reconnect) or ?after=.
  int64_t next_seq = 0;
  std::string last = req.header("last-event-id");
  if (last.empty()) {
    if (auto it = t.query.find("after"); it != t.query.end()) last = it->second;
  }
  if (!last.empty()) {
    if (last.size() > 9 || last.find_first_not_of("0123456789") != std::string::npos) {
      return problem(400, "Last-Event-ID: the id of an event of this stream");
    }
    next_seq = std::stoll(last) + 1;
  }
  if (streams.fetch_add(1) >= api_limits::event_streams_max) {
    streams--;
    api_response r = problem(
        503, fmt::format("event_streams_max ({}) streams are open", api_limits::event_streams_max));
    r.headers.emplace_back("Retry-After", "5");
    return r;
  }
  struct cursor {
    int64_t seq;
  };
  auto c = std::make_shared<cursor>(cursor{next_seq});
  api_response r;
  r.content_type = "text/event-stream";
  r.body = "retry: 1000\n\n";
  r.on_close = [this] { streams--; };
  r.next = [this, c, tenant, id](std::string& out) {
    bool ended = false;
    // Found again on every poll: the tenant may move while the stream is open.
    const uint32_t p = partition_of(tenant);
    std::vector<event_ref> offsets;
    const bool served = engine.with_store(p, [&](const state_store& s) {
      for (int i = 0; i < 64; ++i) {
        auto v = s.get(keys::event_index(tenant, id, static_cast<uint32_t>(c->seq + i)));
        if (!v || !*v) break;
        offsets.push_back(index_entry(**v, p));
      }
      if (offsets.empty()) {
        auto e = s.get(keys::execution(tenant, id));
        execution_state st;
        ended = !e || !*e || !decode_execution(**e, st) || st.status != exec_status::running;
      }
    });
    if (!served) return false;
    std::vector<record> recs;
    for (const event_ref& at : offsets) {
      recs.clear();
      auto n = engine.history().read(stream::executions, at.partition, at.offset, 1, 1 << 20, recs);
      if (!n || *n == 0) break;
      const fbs::Envelope* env = decode_envelope(recs[0].value);
      out += fmt::format("id: {}\nevent: {}\ndata: ", c->seq,
                         env ? payload_name(env->payload_type()) : "Undecodable");
      append_record_json(
          out, {stream::executions, at.partition, recs[0].offset, recs[0].key, recs[0].value});
      out += "\n\n";
      c->seq++;
    }
    if (ended) {
      out += "event: end\ndata: {}\n\n";
      return false;
    }
    return true;
  };
  return r;
}

// ------------------------------------------------------------------------------ lifecycle

api_server::api_server(std::unique_ptr<impl> impl) : _impl(std::move(impl)) {}

api_server::~api_server() {
  // No new request, then no commit, then no decision: each answers what it still holds.
  _impl->server->stop();
  _impl->batcher.reset();
  _impl->watcher.reset();
  _impl->server.reset();
}

uint16_t api_server::port() const { return _impl->server->port(); }

key_store& api_server::keys() { return *_impl->keys; }

result<std::unique_ptr<api_server>> api_server::start(engine_access& engine,
                                                      const api_options& options, clock& clk) {
  auto im = std::make_unique<impl>(engine, options, clk);
  im->keys = std::make_unique<key_store>(options.keys_file);
  if (options.jwt) {
    auto v = jwt_verifier::open(*options.jwt);
    if (!v) return std::unexpected(v.error());
    im->jwt = std::move(*v);
  }
  if (!(options.rate_per_s > 0) || options.rate_burst < 1) {
    return fail(errc::invalid,
                "the rate limit must be above 0 requests/s with a burst of 1 or more");
  }
  im->batcher = std::make_unique<ingress_batcher>(engine.events());
  im->watcher = std::make_unique<decision_watcher>(engine.events());
  impl* raw = im.get();
  auto server = http_server::start(options.http, [raw](api_request&& req, api_responder respond) {
    raw->handle(std::move(req), std::move(respond));
  });
  if (!server) return std::unexpected(server.error());
  im->server = std::move(*server);
  return std::unique_ptr<api_server>(new api_server(std::move(im)));
}

}  // namespace auterity
