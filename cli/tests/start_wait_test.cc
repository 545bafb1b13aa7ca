// `auterity start --wait`, `publish --wait`, `--input @file` / `--input -` and `dump` as a user
// runs them: the real binary on a scratch data directory (embedded log).

#include <stdlib.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <fmt/core.h>
#include <gtest/gtest.h>

namespace {

struct outcome {
  int code = -1;
  std::string out;  // stdout and stderr
};

outcome sh(const std::string& command) {
  std::FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  outcome o;
  if (!p) return o;
  char buf[8192];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) o.out.append(buf, n);
  const int status = ::pclose(p);
  o.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return o;
}

class start_wait : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/auterity-cli-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir = tmpl;
    const outcome pub =
        auterity(fmt::format("publish --tenant acme {}/new_lead.json", AUTERITY_WORKFLOWS_DIR));
    ASSERT_EQ(pub.code, 0) << pub.out;
  }
  void TearDown() override { std::filesystem::remove_all(dir); }

  outcome auterity(const std::string& args, const std::string& stdin_file = "") {
    return sh(fmt::format("'{}' {} --data '{}/data' --no-fsync{}", AUTERITY_BIN, args, dir,
                          stdin_file.empty() ? "" : " < '" + stdin_file + "'"));
  }
  std::string write(const std::string& name, const std::string& text) {
    const std::string path = dir + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

  std::string dir;
};

TEST_F(start_wait, prints_accepted_or_rejected_with_the_name_and_reason) {
  const std::string input = write("in.json", R"({"name": "Ann", "budget": 50000})");
  outcome o = auterity(
      fmt::format("start --tenant acme --workflow new-lead --id lead-1 --input @{} --wait", input));
  EXPECT_EQ(o.code, 0) << o.out;
  EXPECT_EQ(o.out, "accepted: execution lead-1 of new-lead v2 started\n");
  o = auterity(
      fmt::format("start --tenant acme --workflow new-lead --id lead-1 --input @{} --wait", input));
  EXPECT_EQ(o.code, 4) << o.out;
  EXPECT_EQ(o.out, "rejected: duplicate_execution (code 8): execution 'lead-1' already exists\n");
  o = auterity("start --tenant acme --workflow old-lead --id lead-2 --wait");
  EXPECT_EQ(o.code, 4) << o.out;
  EXPECT_EQ(o.out,
            "rejected: unknown_workflow (code 2): workflow 'old-lead' is not published for tenant "
            "'acme'\n");
  // dump names the rejections too.
  o = auterity("dump executions");
  EXPECT_EQ(o.code, 0) << o.out;
  EXPECT_NE(o.out.find("(duplicate_execution, code 8): execution 'lead-1' already exists"),
            std::string::npos)
      << o.out;
}

// publish --wait: the engine's decision, here a cycle of workflow calls refused at publish.
TEST_F(start_wait, publish_wait_prints_accepted_or_the_rejection) {
  const std::string ping = write(
      "ping.json",
      R"({"workflow": "ping", "version": 1, "steps": [{"id": "call", "kind": "workflow", "workflow": "pong"}]})");
  const std::string pong = write(
      "pong.json",
      R"({"workflow": "pong", "version": 1, "steps": [{"id": "back", "kind": "workflow", "workflow": "ping"}]})");
  outcome o = auterity(fmt::format("publish --tenant acme {} --wait", ping));
  EXPECT_EQ(o.code, 0) << o.out;
  EXPECT_EQ(o.out, "accepted: ping v1 published\n");
  o = auterity(fmt::format("publish --tenant acme {} --wait", pong));
  EXPECT_EQ(o.code, 4) << o.out;
  EXPECT_EQ(o.out,
            "rejected: definition_cycle (code 6): pong v1 would close a cycle of workflow calls: "
            "pong v1 (step 'back') -> ping v1 (step 'call') -> pong v1; a workflow that calls "
            "itself through others nests until subworkflow_depth_max (4 levels) and fails\n");
}

TEST_F(start_wait, input_from_stdin_goes_beyond_the_argument_limit) {
  // 100 000 bytes: over Linux's 128 KiB single-argument limit once quoted twice, and over the
  // engine's 64 KiB payload limit, which the rejection names.
  const std::string big =
      write("big.json", fmt::format(R"({{"note": "{}"}})", std::string(100'000, 'x')));
  outcome o = auterity("start --tenant acme --workflow new-lead --id big --input - --wait", big);
  EXPECT_EQ(o.code, 4) << o.out;
  EXPECT_NE(o.out.find("rejected: payload_too_large (code 7)"), std::string::npos) << o.out;
  const std::string ok =
      write("ok.json", fmt::format(R"({{"name": "Bo", "note": "{}"}})", std::string(60'000, 'y')));
  o = auterity("start --tenant acme --workflow new-lead --id ok --input - --wait", ok);
  EXPECT_EQ(o.code, 0) << o.out;
  o = auterity("start --tenant acme --workflow new-lead --id missing --input @/nonexistent.json");
  EXPECT_EQ(o.code, 2);
  EXPECT_NE(o.out.find("--input: cannot read /nonexistent.json"), std::string::npos) << o.out;
}

}  // namespace
