// The FlatBuffers decode path of the engine itself: any bytes a producer puts on ingress or a
// worker on acks, decided by the orchestrator in a real partition runtime (embedded log and
// RocksDB state in a temp directory, one partition, a manual clock). The process starts with
// the sample workflow and policy published for the demo's tenants, so decoded commands and acks
// reach executions. The first input byte: bit 0 picks the stream (ingress or acks), bits 1-7
// advance the clock by that many seconds (timers fire); the rest is the record value.
// Properties: never crashes; the partition never fails (a record that broke it would break it
// again on every restart); every input is consumed.

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/clock.h"
#include "engine/embedded_log.h"
#include "engine/partition_runtime.h"
#include "engine/state_store.h"
#include "processors/client.h"
#include "processors/orchestrator.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

namespace fs = std::filesystem;
using namespace auterity;

constexpr int64_t start_ms = 1'750'000'000'000;
constexpr int runs_per_input_max = 16;

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  FUZZ_CHECK(f.good(), "cannot read %s", path.c_str());
  return std::string(std::istreambuf_iterator<char>(f), {});
}

struct engine {
  std::string dir;
  manual_clock clk{start_ms};
  std::unique_ptr<log> l;
  std::unique_ptr<partition_runtime> runtime;
  uint64_t ingress_end = 0;
  uint64_t acks_end = 0;

  engine() {
    const char* shm = "/dev/shm";
    std::string tmpl =
        std::string(fs::is_directory(shm) ? shm : "/tmp") + "/auterity-fuzz-orchestrator-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    FUZZ_CHECK(::mkdtemp(buf.data()) != nullptr, "mkdtemp failed");
    dir = buf.data();
    embedded_log_options o;
    o.partitions = 1;
    o.fsync = false;
    auto opened = open_embedded_log(dir + "/log", o);
    FUZZ_CHECK(opened.has_value(), "log: %s", opened.error().message.c_str());
    l = std::move(*opened);
    auto store = state_store::open(dir + "/state");
    FUZZ_CHECK(store.has_value(), "state: %s", store.error().message.c_str());
    runtime = std::make_unique<partition_runtime>(
        *l, 0, std::move(*store),
        std::make_unique<orchestrator>(orchestrator_options{
            .partitions = 1, .forward_misplaced = false, .base = 0, .retired = {}}),
        clk);
    auto r = runtime->recover();
    FUZZ_CHECK(r.has_value(), "recover: %s", r.error().message.c_str());

    const std::string workflow = read_file(AUTERITY_WORKFLOWS_DIR "/new_lead.json");
    const std::string policy = read_file(AUTERITY_WORKFLOWS_DIR "/dealer_policy.json");
    for (const char* tenant : {"acme", "acme-motors", "bayside-auto"}) {
      add(stream::ingress, tenant,
          client::publish_definition({tenant, "", "publish", start_ms}, workflow,
                                     R"({"dealer_name":"Acme Motors"})"));
      add(stream::ingress, tenant,
          client::publish_policy({tenant, "", "policy", start_ms}, policy));
    }
    settle();
  }
  ~engine() {
    runtime.reset();
    l.reset();
    fs::remove_all(dir);
  }

  void add(stream s, std::string_view key, std::string value) {
    commit_batch b;
    b.add(s, std::string(key), std::move(value));
    auto c = l->commit(0, b);
    FUZZ_CHECK(c.has_value(), "commit: %s", c.error().message.c_str());
    (s == stream::ingress ? ingress_end : acks_end) = c->front() + 1;
  }
  void settle() {
    for (int i = 0; i < runs_per_input_max; ++i) {
      auto r = runtime->run_once();
      FUZZ_CHECK(r.has_value() && !runtime->failed(), "the partition failed: %s",
                 r ? "failed()" : r.error().message.c_str());
      if (!*r) break;
    }
    auto ingress = l->position("orchestrator", stream::ingress, 0);
    auto acks = l->position("orchestrator", stream::acks, 0);
    FUZZ_CHECK(ingress && *ingress == ingress_end, "an ingress record was not consumed");
    FUZZ_CHECK(acks && *acks == acks_end, "an ack was not consumed");
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static engine e;
  if (size < 1) return 0;
  const stream s = (data[0] & 1) ? stream::acks : stream::ingress;
  e.clk.advance(int64_t{data[0] >> 1} * 1000);
  e.add(s, "acme", std::string(reinterpret_cast<const char*>(data) + 1, size - 1));
  e.settle();
  return 0;
}
