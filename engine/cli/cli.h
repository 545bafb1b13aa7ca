#pragma once
// Subcommands implemented outside main.cc.

#include <atomic>
#include <cstdint>
#include <string>

namespace auterity {

struct demo_flags {
  std::string data_dir = "auterity-demo";
  uint32_t partitions = 4;
  bool fsync = true;
  uint32_t executions = 8;
  bool serve = false;
  bool quiet = false;
  int timeout_s = 60;
};

// The main job: the sample dealership workflow for two tenants, end to end.
int run_demo(const demo_flags& flags, const std::atomic<bool>& interrupted);

}  // namespace auterity
