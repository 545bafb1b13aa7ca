#pragma once
// An execution's history, read back from the log through the event index in the partition's
// state store: one entry per event, in order, with a readable description.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/log.h"
#include "engine/state_store.h"

namespace auterity {

struct timeline_entry {
  uint64_t offset = 0;
  int64_t timestamp_ms = 0;
  std::string type;  // payload type name, e.g. "StepSucceeded"
  std::string record_id;
  std::string causation_id;
  std::string description;  // one readable line
};

// Reads the events of (tenant, execution) from executions[partition].
result<std::vector<timeline_entry>> load_timeline(log& l, uint32_t partition,
                                                  const state_store& store, std::string_view tenant,
                                                  std::string_view execution);

// One readable line for an executions record (events and rejections).
std::string describe_record(std::string_view bytes);

// "+  1.234s  StepSucceeded    step score succeeded: {...}" lines, times relative to the first.
std::string format_timeline(const std::vector<timeline_entry>& entries);

}  // namespace auterity
