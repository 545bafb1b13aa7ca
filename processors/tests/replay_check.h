#pragma once
// The audit check of the harness's tests: the state of every partition equals the replay of its
// log, and every hash chain verifies (replay/verify.h). Link auterity_replay.

#include <gtest/gtest.h>

#include "processors/tests/harness.h"
#include "replay/verify.h"

namespace auterity::testing {

inline void expect_replay_rebuilds_the_state(harness& h) {
  log& l = h.n->get_log();
  for (uint32_t p = 0; p < l.partition_count(); ++p) {
    auto diffs = compare_with_replay(l, p, h.n->partition(p).store(), h.dir + "/rebuilt");
    ASSERT_TRUE(diffs.has_value()) << diffs.error().message;
    EXPECT_TRUE(diffs->empty()) << "partition " << p << ": " << diffs->front();
    auto chains = verify_chains(l, p);
    ASSERT_TRUE(chains.has_value());
    EXPECT_TRUE(chains->problems.empty()) << "partition " << p << ": " << chains->problems.front();
  }
}

}  // namespace auterity::testing
