#include "replay/chain_check.h"

#include <algorithm>
#include <charconv>

#include <fmt/core.h>

#include "processors/execution_state.h"

namespace auterity {

namespace {

bool is_terminal(fbs::Payload t) {
  return t == fbs::Payload::ExecutionSucceeded || t == fbs::Payload::ExecutionFailed ||
         t == fbs::Payload::ExecutionCancelled;
}

std::pair<std::string_view, std::string_view> split_key(std::string_view key) {
  const size_t nul = key.find('\0');
  return {key.substr(0, nul), key.substr(nul + 1)};
}

// The sequence number of "<execution>#<n>" (or "tenant:<tenant>#<n>"), if the id has exactly
// that form for this chain.
std::optional<uint32_t> parse_seq(std::string_view record_id, std::string_view tenant,
                                  std::string_view execution) {
  std::string_view rest = record_id;
  if (execution.empty()) {
    if (!rest.starts_with("tenant:")) return std::nullopt;
    rest.remove_prefix(7);
    if (!rest.starts_with(tenant)) return std::nullopt;
    rest.remove_prefix(tenant.size());
  } else {
    if (!rest.starts_with(execution)) return std::nullopt;
    rest.remove_prefix(execution.size());
  }
  if (!rest.starts_with('#') || rest.size() < 2) return std::nullopt;
  rest.remove_prefix(1);
  if (rest.size() > 1 && rest.front() == '0') return std::nullopt;  // one spelling per number
  uint32_t seq = 0;
  auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), seq);
  if (ec != std::errc() || p != rest.data() + rest.size()) return std::nullopt;
  return seq;
}

bool same_hash(const flatbuffers::Vector<uint8_t>* v, const hash256& h) {
  return v && v->size() == h.size() && std::equal(v->begin(), v->end(), h.begin());
}

std::string chain_name(std::string_view tenant, std::string_view execution) {
  return execution.empty() ? fmt::format("{} (definition chain)", tenant)
                           : fmt::format("{}/{}", tenant, execution);
}

}  // namespace

std::string_view chain_problem_kind_name(chain_problem_kind k) {
  switch (k) {
    case chain_problem_kind::altered:
      return "altered";
    case chain_problem_kind::removed:
      return "removed";
    case chain_problem_kind::reordered:
      return "reordered";
    case chain_problem_kind::truncated:
      return "truncated";
    case chain_problem_kind::appended:
      return "appended";
    case chain_problem_kind::undecodable:
      return "undecodable";
  }
  return "unknown";
}

std::string chain_problem::text() const {
  return fmt::format("executions/{}@{} {}: {}: {}", partition, offset,
                     tenant.empty() && execution.empty() ? "?" : chain_name(tenant, execution),
                     chain_problem_kind_name(kind), detail);
}

chain_checker::chain_checker(uint32_t partition, chain_check_options options)
    : _partition(partition), _o(std::move(options)) {}

bool chain_checker::broken(std::string_view tenant, std::string_view execution) const {
  std::string key(tenant);
  key.push_back('\0');
  key.append(execution);
  auto it = _chains.find(key);
  return it != _chains.end() && it->second.broken;
}

std::string chain_checker::seq_id(std::string_view key, uint32_t seq) const {
  auto [tenant, execution] = split_key(key);
  return execution.empty() ? fmt::format("tenant:{}#{}", tenant, seq)
                           : fmt::format("{}#{}", execution, seq);
}

void chain_checker::report(chain& c, std::string_view key, chain_problem_kind kind, uint64_t offset,
                           std::string record_id, std::string detail) {
  c.broken = true;
  c.pending = suspect::none;
  report(key, kind, offset, std::move(record_id), std::move(detail));
}

void chain_checker::report(std::string_view key, chain_problem_kind kind, uint64_t offset,
                           std::string record_id, std::string detail) {
  auto [tenant, execution] = split_key(key);
  add_problem(chain_problem{_partition, std::string(tenant), std::string(execution), kind, offset,
                            std::move(record_id), std::move(detail)});
}

void chain_checker::add_problem(chain_problem p) {
  ++_problems_total;
  if (_problems.size() < problems_listed_max) _problems.push_back(std::move(p));
}

void chain_checker::accept(chain& c, const event_view& e) {
  c.last = e.hash;
  c.last_offset = e.offset;
  c.count++;
}

result<bool> chain_checker::add(uint64_t offset, std::string_view bytes) {
  std::string why;
  const fbs::Envelope* env = decode_envelope(bytes, &why);
  if (!env) {
    add_problem(
        chain_problem{_partition, "", "", chain_problem_kind::undecodable, offset, "",
                      "the record is not a valid envelope (" + why + "): altered or corrupt"});
    return false;
  }
  const std::string_view tenant = sv(env->tenant_id());
  if (!_o.tenant.empty() && tenant != _o.tenant) return true;
  if (env->kind() != fbs::RecordKind::Event) return true;  // rejections are not chained
  if (env->payload_type() == fbs::Payload::TenantStateInstalled) {
    moved_in(tenant, *env->payload_as_TenantStateInstalled()->chunk());
    return true;  // not chained itself
  }
  ++_events;
  const std::string_view execution = sv(env->execution_id());
  _key.assign(tenant);
  _key.push_back('\0');
  _key.append(execution);
  auto [it, created] = _chains.try_emplace(_key);
  chain& c = it->second;
  if (created) {
    ++_chains_started;
    _open_peak = std::max(_open_peak, _chains.size());
  }
  const event_view e{offset, parse_seq(sv(env->record_id()), tenant, execution), sha256(bytes),
                     env->prev_hash(), env};
  if (c.broken) {
    if (c.pending != suspect::none) resolve(c, it->first, &e);
  } else if (created) {
    first_event(c, it->first, e);
  } else {
    next_event(c, it->first, e);
  }
  bool trusted = !c.broken;
  if (env->payload_type() == fbs::Payload::TenantMovedOut) {
    // The tenant's chains continue on the partition it moved to, from the heads its state
    // carries there (TenantStateInstalled); nothing of it is expected here any more.
    const std::string prefix = std::string(tenant) + '\0';
    std::erase_if(_chains,
                  [&](const auto& kv) { return std::string_view(kv.first).starts_with(prefix); });
    return trusted;
  }
  if (!execution.empty() && is_terminal(env->payload_type())) {
    if (c.pending != suspect::none) resolve(c, it->first, nullptr);
    if (!c.broken) {
      if (auto r = end_chain(c, it->first); !r) return std::unexpected(r.error());
    }
    _chains.erase(it);  // an ended execution needs no memory
  }
  return trusted;
}

// A chunk of a tenant moving here: its running executions' chains, and (last chunk) the tenant
// chain, continue from the heads the source left, as if their earlier events had been read.
void chain_checker::moved_in(std::string_view tenant, const fbs::TenantStateChunk& chunk) {
  auto seed = [&](std::string_view execution, uint32_t count, const hash256& last) {
    _key.assign(tenant);
    _key.push_back('\0');
    _key.append(execution);
    chain& c = _chains[_key];
    c = chain{};
    c.last = last;
    c.count = count;
    _open_peak = std::max(_open_peak, _chains.size());
  };
  const std::string prefix = keys::execution(tenant, "");
  if (chunk.entries()) {
    for (const fbs::StateEntry* entry : *chunk.entries()) {
      const std::string_view key = sv(entry->key());
      if (!key.starts_with(prefix)) continue;
      execution_state e;
      if (!decode_execution(sv(entry->value()), e) || e.status != exec_status::running) continue;
      seed(key.substr(prefix.size()), e.event_count, e.last_hash);
    }
  }
  if (chunk.seq() + 1 == chunk.count() && chunk.chain_hash() &&
      chunk.chain_hash()->size() == hash256{}.size()) {
    hash256 head;
    std::copy(chunk.chain_hash()->begin(), chunk.chain_hash()->end(), head.begin());
    seed("", chunk.chain_events(), head);
  }
}

void chain_checker::first_event(chain& c, std::string_view key, const event_view& e) {
  auto [tenant, execution] = split_key(key);
  const bool starts = execution.empty() || e.env->payload_type() == fbs::Payload::ExecutionStarted;
  const bool no_prev = !e.prev || e.prev->size() == 0;
  const std::string id(sv(e.env->record_id()));
  if (e.seq == 0u && no_prev && starts) return accept(c, e);
  if (e.seq && *e.seq > 0) return suspect_break(c, suspect::gap, e);
  std::string why;
  if (!e.seq) {
    why = fmt::format("its record id '{}' is not '{}'", id, seq_id(key, 0));
  } else if (!no_prev) {
    why = "the first event of a history carries a prev_hash";
  } else {
    why = fmt::format("a history starts with ExecutionStarted, this one with {}",
                      payload_name(e.env->payload_type()));
  }
  report(c, key, chain_problem_kind::altered, e.offset, id,
         fmt::format("event {} (the first of {}) was altered: {}", id,
                     chain_name(tenant, execution), why));
}

void chain_checker::next_event(chain& c, std::string_view key, const event_view& e) {
  if (same_hash(e.prev, c.last) && e.seq == c.count) return accept(c, e);  // the common case
  const std::string id(sv(e.env->record_id()));
  const std::string prev_id = seq_id(key, c.count - 1);
  if (same_hash(e.prev, c.last)) {
    return report(c, key, chain_problem_kind::altered, e.offset, id,
                  fmt::format("event {} was altered: it links to {} (offset {}) but its record "
                              "id is not {}",
                              id, prev_id, c.last_offset, seq_id(key, c.count)));
  }
  if (!e.seq) {
    return report(c, key, chain_problem_kind::altered, e.offset, id,
                  fmt::format("event '{}' was altered: its record id is not '{}' and it does "
                              "not link to {} (offset {})",
                              id, seq_id(key, c.count), prev_id, c.last_offset));
  }
  if (*e.seq < c.count) {
    return report(c, key, chain_problem_kind::reordered, e.offset, id,
                  fmt::format("event {} appears after {} (offset {}): moved or repeated", id,
                              prev_id, c.last_offset));
  }
  suspect_break(c, *e.seq == c.count ? suspect::link : suspect::gap, e);
}

void chain_checker::suspect_break(chain& c, suspect what, const event_view& e) {
  c.broken = true;
  c.pending = what;
  c.pending_seq = *e.seq;
  c.pending_offset = e.offset;
  c.pending_hash = e.hash;
  c.pending_prev.reset();
  if (e.prev && e.prev->size() == hash256{}.size()) {
    hash256 prev;
    std::copy(e.prev->begin(), e.prev->end(), prev.begin());
    c.pending_prev = prev;
  }
}

// A history that starts in the middle: its start was removed — or, if the engine's state says
// the history ended right before this event, the event was appended after the end (the chain
// of an ended execution is not kept in memory).
bool chain_checker::appended_after_end(const chain& c, std::string_view key) const {
  if (!_o.heads || !c.pending_prev) return false;
  auto [tenant, execution] = split_key(key);
  auto head = _o.heads(tenant, execution);
  return head && *head && (*head)->event_count == c.pending_seq &&
         (*head)->last_hash == *c.pending_prev;
}

// Classifies a broken link once the chain's next event (or its end) is known.
void chain_checker::resolve(chain& c, std::string_view key, const event_view* next) {
  const std::string j_id = seq_id(key, c.pending_seq);
  if (c.pending == suspect::gap) {
    const bool missing_seen_later =
        next && next->seq && *next->seq >= c.count && *next->seq < c.pending_seq;
    if (missing_seen_later) {
      return report(c, key, chain_problem_kind::reordered, c.pending_offset, j_id,
                    fmt::format("event {} is out of order: it comes before {} (offset {})", j_id,
                                seq_id(key, *next->seq), next->offset));
    }
    if (c.count == 0 && appended_after_end(c, key)) {
      return report(c, key, chain_problem_kind::appended, c.pending_offset, j_id,
                    fmt::format("event {} was appended after the history's last event {}: the "
                                "engine applied {} events",
                                j_id, seq_id(key, c.pending_seq - 1), c.pending_seq));
    }
    const std::string first_missing = seq_id(key, c.count);
    const std::string missing =
        c.pending_seq == c.count + 1
            ? first_missing
            : fmt::format("{}..{}", first_missing, seq_id(key, c.pending_seq - 1));
    const std::string after =
        c.count == 0 ? "at the start of the history (or the history had ended and this event "
                       "was appended after its end)"
                     : fmt::format("after {} (offset {})", seq_id(key, c.count - 1), c.last_offset);
    return report(c, key, chain_problem_kind::removed, c.pending_offset, first_missing,
                  fmt::format("event {} was removed: {} is missing {}; the history continues "
                              "with {} at offset {}",
                              first_missing, missing, after, j_id, c.pending_offset));
  }
  const std::string i_id = seq_id(key, c.count - 1);
  std::optional<bool> i_altered;  // the event before the break, or the one after it?
  if (next) {
    i_altered = same_hash(next->prev, c.pending_hash);
  } else if (_o.heads && c.pending_offset < _o.heads_cover) {
    auto [tenant, execution] = split_key(key);
    auto head = _o.heads(tenant, execution);
    if (head && *head) i_altered = (*head)->last_hash == c.pending_hash;
  }
  if (i_altered == true) {
    return report(c, key, chain_problem_kind::altered, c.last_offset, i_id,
                  fmt::format("event {} (offset {}) was altered: its hash no longer matches the "
                              "prev_hash recorded by {} (offset {})",
                              i_id, c.last_offset, j_id, c.pending_offset));
  }
  if (i_altered == false) {
    return report(c, key, chain_problem_kind::altered, c.pending_offset, j_id,
                  fmt::format("event {} (offset {}) was altered: its prev_hash does not name "
                              "{} (offset {}) and the event after it does not name it either",
                              j_id, c.pending_offset, i_id, c.last_offset));
  }
  report(c, key, chain_problem_kind::altered, c.last_offset, i_id,
         fmt::format("event {} (offset {}) or {} (offset {}) was altered: the link between them "
                     "is broken and nothing follows to tell which",
                     i_id, c.last_offset, j_id, c.pending_offset));
}

result<void> chain_checker::compare_head(chain& c, std::string_view key) {
  if (!_o.heads || c.last_offset >= _o.heads_cover) return {};
  auto [tenant, execution] = split_key(key);
  auto head = _o.heads(tenant, execution);
  if (!head) return std::unexpected(head.error());
  const size_t before = _problems_total;
  check_end(ended_history{std::string(key), c.count, c.last, c.last_offset}, *head);
  if (_problems_total != before) c.broken = true;
  return {};
}

// An ended history joins the batch waiting for its end comparison; a full batch is spilled.
result<void> chain_checker::end_chain(const chain& c, std::string_view key) {
  if (!_o.heads || c.last_offset >= _o.heads_cover) return {};
  _ended.push_back({std::string(key), c.count, c.last, c.last_offset});
  if (_ended.size() < _o.ended_batch_max || !_o.scan) return {};
  if (!_spill) _spill = std::make_unique<head_spill>();
  return _spill->add_run(_ended);
}

result<void> chain_checker::compare_ended_by_lookup() {
  std::sort(_ended.begin(), _ended.end(),
            [](const auto& a, const auto& b) { return a.key < b.key; });  // locality
  for (const ended_history& e : _ended) {
    auto [tenant, execution] = split_key(e.key);
    auto head = _o.heads(tenant, execution);
    if (!head) return std::unexpected(head.error());
    check_end(e, *head);
  }
  _ended.clear();
  return {};
}

// The spilled runs merged in key order against one scan of each tenant's execution heads.
result<void> chain_checker::compare_ended_by_scan() {
  if (auto r = _spill->add_run(_ended); !r) return r;
  if (auto r = _spill->start_merge(); !r) return r;
  auto first = _spill->next();
  if (!first) return std::unexpected(first.error());
  std::optional<ended_history> cur = std::move(*first);
  while (cur) {
    if (auto r = scan_tenant(cur); !r) return r;
  }
  return {};
}

// Compares the ended histories of cur's tenant with that tenant's heads; leaves `cur` at the
// next tenant's first history (or empty).
result<void> chain_checker::scan_tenant(std::optional<ended_history>& cur) {
  const std::string tenant(split_key(cur->key).first);
  auto of_tenant = [&] { return cur && split_key(cur->key).first == tenant; };
  result<void> status;
  auto step = [&] {
    auto n = _spill->next();
    if (!n) status = std::unexpected(n.error());
    cur = n ? std::move(*n) : std::nullopt;
  };
  auto scanned = _o.scan(tenant, [&](std::string_view execution, const chain_head& head) {
    while (status && of_tenant() && split_key(cur->key).second < execution) {
      check_end(*cur, std::nullopt), step();
    }
    if (status && of_tenant() && split_key(cur->key).second == execution) {
      check_end(*cur, head), step();
    }
    return status && of_tenant();
  });
  if (!scanned) return scanned;
  while (status && of_tenant()) check_end(*cur, std::nullopt), step();
  return status;
}

// The end of a history against the engine's record of it (nullopt: the engine holds none,
// which the state comparison reports).
void chain_checker::check_end(const ended_history& c, const std::optional<chain_head>& head) {
  if (!head) return;
  const chain_head& h = *head;
  if (h.event_count == c.count && h.last_hash == c.last) return;
  const std::string last_id = seq_id(c.key, c.count - 1);
  if (h.event_count > c.count) {
    const std::string missing = seq_id(c.key, c.count);
    return report(c.key, chain_problem_kind::truncated, c.last_offset, missing,
                  fmt::format("event {} was removed: the engine applied {} events but the log's "
                              "history ends with {} (offset {})",
                              missing, h.event_count, last_id, c.last_offset));
  }
  if (h.event_count < c.count) {
    const std::string extra = seq_id(c.key, h.event_count);
    return report(c.key, chain_problem_kind::appended, c.last_offset, extra,
                  fmt::format("events from {} on are not the engine's: the log holds {} events, "
                              "the engine applied {}",
                              extra, c.count, h.event_count));
  }
  report(c.key, chain_problem_kind::altered, c.last_offset, last_id,
         fmt::format("event {} (offset {}), the last of its history, was altered: its hash {} "
                     "is not the {} the engine recorded",
                     last_id, c.last_offset, hex(c.last).substr(0, 16),
                     hex(h.last_hash).substr(0, 16)));
}

result<void> chain_checker::finish() {
  // Histories still open end here: their ends join the ended ones (tenant chains, which the
  // execution scan does not cover, are looked up one by one; there is one per tenant).
  for (auto& [key, c] : _chains) {
    if (c.pending != suspect::none) resolve(c, key, nullptr);
    if (c.broken) continue;
    auto r = split_key(key).second.empty() ? compare_head(c, key) : end_chain(c, key);
    if (!r) return r;
  }
  if (!_spill && _ended.size() > lookups_max && _o.scan) _spill = std::make_unique<head_spill>();
  auto ended = _spill ? compare_ended_by_scan() : compare_ended_by_lookup();
  if (!ended) return ended;
  // Chains end in hash-map order; sort so a report reads the same on every run.
  std::stable_sort(_problems.begin(), _problems.end(), [](const auto& a, const auto& b) {
    return std::tie(a.offset, a.tenant, a.execution) < std::tie(b.offset, b.tenant, b.execution);
  });
  return {};
}

}  // namespace auterity
