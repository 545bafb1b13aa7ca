#pragma once
// Internal to processors/: the orchestrator's in-memory view of its partition's state — a
// cache over the state store plus the changes of the current batch. Appliers change it; the
// decider only reads it.

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "engine/partition_runtime.h"
#include "engine/state_store.h"
#include "processors/definition.h"
#include "processors/execution_state.h"
#include "processors/limits.h"
#include "processors/tenant_load.h"
#include "processors/tenant_policy.h"

namespace auterity {

struct timer_entry {
  // The step of `execution` whose timer this is, or hold_window: the end of the hold window of
  // the signals held for `execution`, an id the partition does not know (it has no steps).
  static constexpr uint16_t hold_window = 0xFFFF;
  int64_t due_ms;
  std::string tenant;
  std::string execution;
  uint16_t step;
  auto operator<=>(const timer_entry&) const = default;

  // A foreach item's timer takes the slot item_slot_base + step * foreach_items_max + item
  // (the key keeps its 16-bit step field; step slots below item_slot_base are steps).
  static constexpr uint16_t item_slot_base = limits::steps_per_definition_max;
  static uint16_t item_slot(uint16_t step, uint32_t item) {
    return static_cast<uint16_t>(item_slot_base + step * limits::foreach_items_max + item);
  }
  bool is_item() const { return step >= item_slot_base && step != hold_window; }
  uint16_t item_step() const {
    return static_cast<uint16_t>((step - item_slot_base) / limits::foreach_items_max);
  }
  uint32_t item_index() const {
    return static_cast<uint32_t>((step - item_slot_base) % limits::foreach_items_max);
  }
};
static_assert(limits::steps_per_definition_max < timer_entry::hold_window);
static_assert(timer_entry::item_slot_base +
                  limits::steps_per_definition_max * limits::foreach_items_max <
              timer_entry::hold_window);

// Where a tenant's state lives, as this partition knows it (docs/tenant-moves.md). A tenant
// with no entry sits on its default partition, tenant_partition(tenant, partition count).
struct placement_entry {
  enum class phase : uint8_t {
    here = 0,        // moved in: this partition decides for it
    moved_out = 1,   // moved to `partition`: its inputs are forwarded there
    installing = 2,  // chunks of its state are arriving (next_seq of count)
  };
  phase ph = phase::here;
  uint32_t partition = 0;  // moved_out: where it went; installing: where it comes from
  uint32_t epoch = 0;
  uint32_t next_seq = 0;  // installing: the next chunk expected
  hash256 rolling{};      // installing: SHA-256 chained over the chunk digests so far
};
std::string encode_placement(const placement_entry& p);
bool decode_placement(std::string_view bytes, placement_entry& out);

class orchestrator_state {
 public:
  result<void> open(state_store& store);

  // Cached lookups; load from the store on a miss (prefetch makes misses rare in decide).
  execution_state* find_execution(std::string_view tenant, std::string_view id);
  // Puts the executions `ids` (tenant, execution id) in the cache, reading the ones it does not
  // hold in one ordered pass over the store (state_store::get_sorted) rather than a point read
  // each: fire_timers() loads the executions of the timers due with it. Only fills the cache
  // (ids absent from the store are remembered as absent until the flush, as find_execution()
  // does): find_execution() returns the same bytes either way.
  void load_executions(std::vector<std::pair<std::string_view, std::string_view>> ids);
  const definition* find_definition(std::string_view tenant, std::string_view workflow,
                                    uint32_t version);  // version 0: latest
  bool tenant_known(std::string_view tenant);
  tenant_chain& chain(std::string_view tenant);
  // The tenant's policy in force (null: none published) and its version (0: none).
  const tenant_policy* policy(std::string_view tenant);
  uint32_t policy_version(std::string_view tenant);
  // A tenant counter or record outside executions (AI spend, notification windows and
  // content hashes; keys in execution_state.h). nullopt: absent. For a tenant whose counters
  // are loaded (load_counters) a key of those kinds never reads the store.
  const std::optional<std::string>& value(const std::string& key);
  // Loads every AI spend (U, V), rate window (N) and dedup (X) key of the tenant, unless
  // loaded: four short prefix scans, short because the appliers prune them (POLICY.md,
  // Retention). Prefetch calls it, so the decider's lookups of these kinds never miss, even
  // for a content hash only known once the step input is rendered.
  void load_counters(std::string_view tenant);

  // While set, every store read counts into `counter` (the probe's decide_reads): the
  // orchestrator sets it around deciding, where prefetch should have left nothing to read.
  void set_deciding(bool deciding) { _deciding = deciding; }
  void count_decide_reads(std::atomic<uint64_t>* counter) { _decide_reads = counter; }

  // The tenant's stored spend days and months and dedup entries, ordered for pruning.
  struct counter_index {
    std::set<std::string> days;                       // "YYYY-MM-DD" with a U key
    std::set<std::string> months;                     // "YYYY-MM" with a V key
    std::set<std::pair<int64_t, std::string>> dedup;  // (admitted_ms, X key), oldest first
  };
  // Loads the tenant's counters if needed (store reads: live, prefetch did it already).
  const counter_index& counters(std::string_view tenant);

  // The AI spend and budgets of every tenant with AI spend stored (U or V keys; a budget alone
  // makes no entry: the registry open() lists tenants by holds only those with a definition),
  // kept current by the appliers, so replay and the live path agree: open() reads them from
  // the store (the latest U and V key and the policy of each registered tenant),
  // note_ai_spend() follows a usage, put_policy() a budget, a move installs or drops the
  // tenant's entry. One small entry per tenant with spend.
  const std::unordered_map<std::string, tenant_ai_spend>& ai_spend_all() const { return _spend; }
  // Tenants whose entry changed since the last call (erased: no entry now); emptied.
  std::set<std::string> take_ai_spend_changes() { return std::exchange(_spend_changed, {}); }

  // The load of every tenant seen on this partition since open (tenant_load.h): running
  // executions from the state (open() counts them, the appliers keep them: an execution
  // started or ended, a tenant moved in or out), events as applied, inputs as decided. In
  // memory only; nothing here reads the store while deciding. A tenant that moved away keeps
  // its counters (running 0), so sums over tenants never go down.
  const std::unordered_map<std::string, tenant_activity>& activity_all() const { return _activity; }
  // Tenants whose entry changed since the last call; emptied.
  std::set<std::string> take_activity_changes() { return std::exchange(_activity_changed, {}); }
  // An input of the tenant read at `now_ms` (the orchestrator, for each decodable input).
  void note_input(std::string_view tenant, int64_t now_ms);

  // Signals held for an execution id this partition does not know yet, in arrival order; null
  // if none. All held signals are in memory (open() loads them; limits::signals_held_* bound
  // them), so deciding never reads them from the store.
  const std::vector<held_signal>* held(std::string_view tenant, std::string_view execution) const;
  struct held_totals {
    size_t signals = 0;
    size_t bytes = 0;  // held_signal::bytes()
  };
  held_totals held_of_tenant(std::string_view tenant) const;

  // The tenant's placement entry on this partition; null: none (default placement). All entries
  // are in memory (open() loads them; one per tenant ever moved in or out).
  const placement_entry* placement(std::string_view tenant) const;
  // Every key and value of the tenant's state as stored (the store must be current: the
  // orchestrator calls it with no batch pending), except its chain head, with event index
  // entries naming this partition; sorted by key. Plus the running executions' count.
  struct tenant_export {
    std::vector<std::pair<std::string, std::string>> entries;
    size_t bytes = 0;
    uint32_t running = 0;
  };
  result<tenant_export> export_tenant(std::string_view tenant, uint32_t partition);

  // --- for appliers only ---
  void put_placement(std::string_view tenant, const placement_entry& p);
  // Forgets the tenant here: every key of its range and its registry entry are deleted with this
  // batch, and nothing of it stays in memory (its timers stop).
  void drop_tenant(std::string_view tenant);
  // Writes an entry of a tenant's state as received in a move (into this batch's changes).
  // Call forget_tenant() for the tenant first, once per chunk: nothing cached may shadow it.
  void install(std::string_view key, std::string_view value);
  // Drops every cached entry of the tenant's range (no store change).
  void forget_tenant(std::string_view tenant);
  // The tenant's chain head as the source left it, before its TenantMovedIn extends it.
  void set_chain(std::string_view tenant, const tenant_chain& c);
  // Puts the moved-in tenant's timers and held signals in memory (from the store and what this
  // batch installed), so they fire and are released here from now on.
  void load_installed(std::string_view tenant);
  execution_state& create_execution(execution_state e);
  void mark_dirty(const execution_state& e);
  void mark_chain_dirty(std::string_view tenant);
  void set_timer(execution_state& e, uint16_t step, int64_t due_ms);  // 0 clears
  void set_item_timer(execution_state& e, uint16_t step, uint32_t item, int64_t due_ms);
  void put_definition(std::string_view tenant, const definition& d);
  void index_event(const execution_state& e, uint32_t seq, record_position where);
  void on_ended(const execution_state& e);
  // An event of the tenant applied (apply_record, live and replay); `started`: it started an
  // execution.
  void note_event(std::string_view tenant, int64_t at_ms, bool started);
  void put_policy(std::string_view tenant, uint32_t version, const tenant_policy& p);
  void put_value(const std::string& key, std::string value);
  void del_value(const std::string& key);
  // After a usage added to the tenant's spend of `day` and `month` (values already put): the
  // spend view takes the totals, unless a later day (month) has spend already.
  void note_ai_spend(std::string_view tenant, const std::string& day, const std::string& month);
  // Adds a held signal; the first for an execution id sets its hold-window timer.
  void hold_signal(std::string_view tenant, std::string_view execution, held_signal h);
  // Removes every signal held for the id and its timer; returns how many there were.
  size_t release_held(std::string_view tenant, std::string_view execution);

  const std::set<timer_entry>& timers() const { return _timers; }
  // After the commit: resolves pending event positions with the batch's committed executions
  // offsets and hands over every change: of the oldest staged batch, or with none staged of
  // the current one (stage() and flush() in one).
  void flush(state_batch& out, const std::vector<uint64_t>& event_offsets);
  // Pipelining (partition_processor::stage): sets the current batch's changes aside as a staged
  // batch (the dirty executions and chains encoded as they are now), so the next batch can be
  // decided before this one is written. What the next batch reads comes from memory, never from
  // the store that lacks the staged changes: every key a batch writes is also in a cache that is
  // not trimmed while a batch is staged (executions it ended stay cached until it is written;
  // the values cache is trimmed only with nothing staged).
  void stage();
  size_t staged() const { return _staged.size(); }
  // False while the current state needs the store to hold what is staged: a tenant installed or
  // dropped (read() and the scans then merge _installed/_dropped, which hold one batch's
  // changes only), or a values cache over its limit (trimmed only with nothing staged).
  bool may_decide_ahead() const;

 private:
  state_store* _store = nullptr;
  std::unordered_map<std::string, std::unique_ptr<execution_state>> _executions;
  std::unordered_set<std::string> _dirty;
  std::unordered_set<std::string> _ended;  // evicted from the cache after the flush
  // Execution and definition keys found absent in this batch (prefetch looked): not read
  // again while deciding. Emptied by the flush, so unknown ids do not accumulate.
  std::unordered_set<std::string> _absent;
  std::unordered_map<std::string, std::shared_ptr<const definition>> _definitions;
  std::unordered_map<std::string, uint32_t> _latest;
  std::unordered_map<std::string, bool> _tenants;
  std::unordered_map<std::string, tenant_chain> _chains;
  std::unordered_set<std::string> _dirty_chains;
  std::set<timer_entry> _timers;
  std::map<std::pair<std::string, std::string>, std::vector<held_signal>> _held;  // tenant, id
  std::unordered_map<std::string, held_totals> _held_totals;     // by tenant; absent: none
  std::unordered_map<std::string, placement_entry> _placements;  // by tenant
  // Keys a move installed in this batch (also in _pending): read() sees them before the store
  // has them, so a batch or a replay run that installs a tenant can decide or apply for it.
  std::map<std::string, std::string, std::less<>> _installed;
  // Tenants dropped in this batch: the store holds their old keys until the flush, so reads of
  // their range see only _installed.
  std::set<std::string, std::less<>> _dropped;
  std::map<std::string, std::string> scan_seen(std::string_view tenant, const std::string& prefix);

  result<void> load_held(std::string_view tenant);
  struct versioned_policy {
    uint32_t version = 0;  // 0: none
    std::shared_ptr<const tenant_policy> policy;
  };
  versioned_policy& load_policy(std::string_view tenant);
  std::unordered_map<std::string, versioned_policy> _policies;
  std::unordered_map<std::string, std::optional<std::string>> _values;
  std::unordered_map<std::string, tenant_ai_spend> _spend;  // by tenant
  std::set<std::string> _spend_changed;
  std::unordered_map<std::string, tenant_activity> _activity;  // by tenant
  std::set<std::string> _activity_changed;
  tenant_activity& activity(std::string_view tenant);
  // The running executions stored under `prefix` as this batch sees them (scan_seen), or in the
  // store when `tenant` is empty.
  uint64_t count_running(std::string_view tenant);
  void set_spend(std::string_view tenant, tenant_ai_spend s);
  // The tenant's entry from its state as read() sees it (a moved-in tenant's installed keys).
  result<void> load_spend(std::string_view tenant);
  // Tenants whose U, V, N and X keys are all in _values (absent there: absent in the store).
  std::unordered_map<std::string, counter_index> _counters;
  counter_index* loaded_counters(std::string_view key);
  counter_index& ensure_counters(std::string_view tenant);  // of the key's tenant, if loaded
  void index_value(counter_index& idx, std::string_view key, const std::optional<std::string>& v,
                   bool present);
  result<std::optional<std::string>> read(std::string_view key);
  bool _deciding = false;
  std::atomic<uint64_t>* _decide_reads = nullptr;
  state_batch _pending;
  std::vector<std::pair<std::string, uint64_t>> _unresolved;  // index key, batch ordinal
  // A batch decided and set aside by stage(), written by a later flush().
  struct staged_batch {
    state_batch changes;
    std::vector<std::pair<std::string, uint64_t>> unresolved;
    std::unordered_set<std::string> dirtied;  // executions encoded into `changes`
    std::unordered_set<std::string> ended;    // evicted from the cache once written
  };
  std::deque<staged_batch> _staged;  // oldest first; at most two (partition_processor::stage)
};

// Applies one committed executions record (events change state; rejections do not). The live
// path and replay both call this, so they cannot disagree.
void apply_record(orchestrator_state& state, record_position where, std::string_view bytes);

}  // namespace auterity
