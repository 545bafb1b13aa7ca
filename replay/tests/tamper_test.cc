// Tampering with the history is detected and located. The embedded log checksums its frames,
// so a tamperer who wants to go unnoticed rewrites the log consistently: these tests read the
// golden history's records, alter them, and write them into a fresh embedded log with valid
// framing — beside the engine's state of the original history — then verify.

#include <random>

#include <gtest/gtest.h>

#include "engine/assert.h"
#include "replay/source.h"
#include "replay/tests/golden.h"
#include "replay/verify.h"

namespace auterity::testing {
namespace {

class tamper : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    _golden = new history_file(load_golden());
    _clean = new dir_guard{scratch_temp_dir("tamper-clean")};
    auto r = build_data_dir(_clean->path, _golden->partitions, _golden->records);
    ASSERT_TRUE(r.has_value()) << r.error().message;
  }
  static void TearDownTestSuite() {
    delete _clean;
    delete _golden;
  }

  std::vector<logged_record> records() const { return _golden->records; }

  // Index in records() of the executions record with this record id.
  static size_t index_of(const std::vector<logged_record>& recs, std::string_view record_id) {
    for (size_t i = 0; i < recs.size(); ++i) {
      if (recs[i].s != stream::executions) continue;
      const fbs::Envelope* e = decode_envelope(recs[i].value);
      if (e && sv(e->record_id()) == record_id) return i;
    }
    ADD_FAILURE() << "no record " << record_id << " in the golden history";
    return 0;
  }

  // The offset recs[i] gets when `recs` is written to a log (dense per stream and partition).
  static uint64_t offset_of(const std::vector<logged_record>& recs, size_t i) {
    uint64_t offset = 0;
    for (size_t k = 0; k < i; ++k) {
      offset += recs[k].s == recs[i].s && recs[k].partition == recs[i].partition;
    }
    return offset;
  }

  // Writes the rewritten log beside the original state and verifies it.
  verify_report verify(const std::vector<logged_record>& recs, bool with_state,
                       size_t ended_batch_max = 32768) {
    const std::string dir = fmt::format("{}/case{}", _clean->path, ++_cases);
    if (with_state) {
      auto made = tampered_data_dir(dir, _golden->partitions, recs, _clean->path);
      EXPECT_TRUE(made.has_value()) << made.error().message;
    } else {
      auto made = write_log(dir, _golden->partitions, recs);  // closed again at once
      EXPECT_TRUE(made.has_value()) << made.error().message;
    }
    auto src = open_embedded_source(dir, with_state);
    if (!src) {
      ADD_FAILURE() << src.error().message;
      return {};
    }
    verify_options o;
    o.state = with_state;
    o.scratch_dir = dir + "/scratch";
    o.ended_batch_max = ended_batch_max;
    auto report = verify_log(*src->events, src->store_ptrs(), o);
    EXPECT_TRUE(report.has_value()) << report.error().message;
    return report ? std::move(*report) : verify_report{};
  }

  static std::vector<chain_problem> chain_problems(const verify_report& r) {
    std::vector<chain_problem> out;
    for (const auto& p : r.partitions)
      out.insert(out.end(), p.chain_problems.begin(), p.chain_problems.end());
    return out;
  }

  static void flip_text(logged_record& r, std::string_view inside) {
    const size_t at = r.value.find(inside);
    vassert(at != std::string::npos, "the record has no '{}'", inside);
    r.value[at] ^= 0x20;  // 't' -> 'T': the envelope still decodes, its bytes differ
  }

  static inline history_file* _golden = nullptr;
  static inline dir_guard* _clean = nullptr;
  static inline int _cases = 0;  // one directory per verification, across tests
};

TEST_F(tamper, the_untouched_history_verifies) {
  ASSERT_TRUE(verify(records(), true, 1).ok());  // ends compared by spill and merge
  const verify_report r = verify(records(), true);
  EXPECT_TRUE(r.ok()) << (chain_problems(r).empty() ? "state differs"
                                                    : chain_problems(r)[0].text());
  uint64_t events = 0;
  for (const auto& p : r.partitions) {
    EXPECT_TRUE(p.heads_compared) << "partition " << p.partition;
    EXPECT_TRUE(p.state_compared);
    events += p.events;
  }
  EXPECT_EQ(events, 101u);  // every event of the golden history was checked
}

TEST_F(tamper, a_flipped_byte_in_an_event_payload_is_located) {
  auto recs = records();
  const size_t i = index_of(recs, "lead-0002#4");  // StepSucceeded: the AI's draft
  flip_text(recs[i], "test drive");
  for (bool with_state : {false, true}) {
    SCOPED_TRACE(with_state ? "with the engine's state" : "log only");
    const auto problems = chain_problems(verify(recs, with_state));
    ASSERT_EQ(problems.size(), 1u);
    EXPECT_EQ(problems[0].kind, chain_problem_kind::altered) << problems[0].text();
    EXPECT_EQ(problems[0].record_id, "lead-0002#4") << problems[0].text();
    EXPECT_EQ(problems[0].offset, offset_of(recs, i)) << problems[0].text();
    EXPECT_EQ(problems[0].execution, "lead-0002");
  }
}

TEST_F(tamper, a_dropped_event_is_located) {
  auto recs = records();
  const size_t dropped = index_of(recs, "lead-0002#6");
  recs.erase(recs.begin() + static_cast<ptrdiff_t>(dropped));
  const size_t next = index_of(recs, "lead-0002#7");
  const auto problems = chain_problems(verify(recs, false));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].kind, chain_problem_kind::removed) << problems[0].text();
  EXPECT_EQ(problems[0].record_id, "lead-0002#6") << problems[0].text();
  EXPECT_EQ(problems[0].offset, offset_of(recs, next)) << problems[0].text();
}

TEST_F(tamper, two_swapped_events_are_located) {
  auto recs = records();
  const size_t a = index_of(recs, "lead-0002#6");
  const size_t b = index_of(recs, "lead-0002#7");
  std::swap(recs[a], recs[b]);  // #7 now sits where #6 was
  const auto problems = chain_problems(verify(recs, false));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].kind, chain_problem_kind::reordered) << problems[0].text();
  EXPECT_EQ(problems[0].record_id, "lead-0002#7") << problems[0].text();
  EXPECT_EQ(problems[0].offset, offset_of(recs, a)) << problems[0].text();
}

TEST_F(tamper, an_altered_last_event_is_caught_by_the_engines_state) {
  auto recs = records();
  const size_t i = index_of(recs, "lead-0002#18");  // ExecutionSucceeded: nothing follows it
  flip_text(recs[i], "followup");
  // The chain alone cannot vouch for the newest event; the report says what was not checked.
  const verify_report alone = verify(recs, false);
  EXPECT_TRUE(chain_problems(alone).empty());
  EXPECT_FALSE(alone.partitions[1].notes.empty());
  // The engine's state holds each history's last hash: with it the change is found, whether
  // the ends are compared by lookup or (many ended histories) by spilling and merging.
  for (size_t batch : {size_t{32768}, size_t{1}}) {
    const auto problems = chain_problems(verify(recs, true, batch));
    ASSERT_EQ(problems.size(), 1u);
    EXPECT_EQ(problems[0].kind, chain_problem_kind::altered) << problems[0].text();
    EXPECT_EQ(problems[0].record_id, "lead-0002#18") << problems[0].text();
    EXPECT_EQ(problems[0].offset, offset_of(recs, i));
  }
}

TEST_F(tamper, a_dropped_last_event_is_caught_by_the_engines_state) {
  auto recs = records();
  recs.erase(recs.begin() + static_cast<ptrdiff_t>(index_of(recs, "lead-0002#18")));
  for (size_t batch : {size_t{32768}, size_t{1}}) {
    const auto problems = chain_problems(verify(recs, true, batch));
    ASSERT_EQ(problems.size(), 1u);
    EXPECT_EQ(problems[0].kind, chain_problem_kind::truncated) << problems[0].text();
    EXPECT_EQ(problems[0].record_id, "lead-0002#18") << problems[0].text();
    EXPECT_EQ(problems[0].offset, offset_of(recs, index_of(recs, "lead-0002#17")));
  }
}

TEST_F(tamper, a_forged_event_with_a_valid_hash_after_the_end_is_caught) {
  auto recs = records();
  const size_t last = index_of(recs, "lead-0002#18");
  const fbs::Envelope* end = decode_envelope(recs[last].value);
  const hash256 prev = sha256(recs[last].value);
  flatbuffers::FlatBufferBuilder fbb;
  auto payload = fbs::CreateSignalReceived(fbb, fbb.CreateString("customer_replied"),
                                           fbb.CreateString(R"({"text":"never said this"})"));
  envelope_header h;
  h.tenant_id = sv(end->tenant_id());
  h.execution_id = "lead-0002";
  h.record_id = "lead-0002#19";
  h.causation_id = "forged";
  h.timestamp_ms = end->timestamp_ms() + 1;
  h.prev_hash = &prev;
  recs.push_back({stream::executions, recs[last].partition, 0, recs[last].key,
                  finish_envelope(fbb, h, fbs::Payload::SignalReceived, payload.Union())});
  const auto problems = chain_problems(verify(recs, true));
  ASSERT_GE(problems.size(), 1u);
  EXPECT_EQ(problems[0].kind, chain_problem_kind::appended) << problems[0].text();
  EXPECT_EQ(problems[0].record_id, "lead-0002#19") << problems[0].text();
  EXPECT_EQ(problems[0].offset, offset_of(recs, recs.size() - 1));
}

TEST_F(tamper, an_altered_definition_is_located) {
  auto recs = records();
  const size_t i = index_of(recs, "tenant:acme-motors#0");  // the new-lead definition
  flip_text(recs[i], "test drive");
  const auto problems = chain_problems(verify(recs, false));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].record_id, "tenant:acme-motors#0") << problems[0].text();
  EXPECT_EQ(problems[0].execution, "");
  EXPECT_EQ(problems[0].offset, offset_of(recs, i));
}

// Any byte of any event, flipped: found, located, and the verifier (which replays the log
// through the appliers) never aborts on what the flip made of the record.
TEST_F(tamper, any_flipped_byte_of_any_event_is_found_without_crashing) {
  const char* env = std::getenv("AUTERITY_TEST_SEED");
  const uint64_t seed = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
  SCOPED_TRACE(fmt::format("seed {} (rerun with AUTERITY_TEST_SEED={})", seed, seed));
  fmt::print("tamper: seed {} (rerun with AUTERITY_TEST_SEED={})\n", seed, seed);
  std::mt19937_64 rng(seed);
  std::vector<size_t> events;
  for (size_t i = 0; i < _golden->records.size(); ++i) {
    const fbs::Envelope* e = decode_envelope(_golden->records[i].value);
    if (_golden->records[i].s == stream::executions && e && e->kind() == fbs::RecordKind::Event) {
      events.push_back(i);
    }
  }
  for (int round = 0; round < 30; ++round) {
    auto recs = records();
    const size_t i = events[rng() % events.size()];
    const std::string id(sv(decode_envelope(recs[i].value)->record_id()));
    const size_t at = rng() % recs[i].value.size();
    recs[i].value[at] = static_cast<char>(recs[i].value[at] ^ (1 + rng() % 255));
    SCOPED_TRACE(fmt::format("byte {} of {} flipped", at, id));
    const verify_report r = verify(recs, true, round % 2 ? 32768 : 1);
    const auto problems = chain_problems(r);
    ASSERT_FALSE(problems.empty());
    const uint64_t offset = offset_of(recs, i);
    const bool located = std::any_of(problems.begin(), problems.end(), [&](const auto& p) {
      return p.offset == offset || p.record_id == id;
    });
    EXPECT_TRUE(located) << problems[0].text();
  }
}

}  // namespace
}  // namespace auterity::testing
