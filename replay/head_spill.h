#pragma once
// An external sort for the chain check's ended histories: their ends (event count, last hash,
// last offset) are sorted in batches in memory, written to a temporary file as sorted runs, and
// read back merged in key order — so they can be compared with the engine's state by one
// sequential scan of it instead of a point read per execution (which on a large RocksDB file
// re-reads big blocks each time: a hundred times slower).
//
// Memory: one batch while filling, then one read buffer per run while merging.

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/record.h"
#include "engine/result.h"

namespace auterity {

struct ended_history {
  std::string key;  // tenant '\0' execution: sorts like the state's execution keys
  uint32_t count = 0;
  hash256 last{};
  uint64_t last_offset = 0;
};

class head_spill {
 public:
  head_spill();
  ~head_spill();
  head_spill(const head_spill&) = delete;
  head_spill& operator=(const head_spill&) = delete;

  // Sorts `batch` and appends it to the file as one run; clears it.
  result<void> add_run(std::vector<ended_history>& batch);
  size_t runs() const { return _runs.size(); }

  // Merges the runs; next() returns the histories in key order, nullopt at the end.
  result<void> start_merge();
  result<std::optional<ended_history>> next();

 private:
  struct run {
    uint64_t begin, end;  // byte range in the file
    uint64_t pos;
    std::string buffer;
    size_t used = 0;
    std::optional<ended_history> head;
  };
  result<void> advance(run& r);
  result<bool> fill(run& r, size_t need);

  struct file_closer {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  std::unique_ptr<std::FILE, file_closer> _file;
  uint64_t _size = 0;
  std::vector<run> _runs;
};

}  // namespace auterity
