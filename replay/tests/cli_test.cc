// `auterity replay` as a script uses it: exit codes (0 verified/shown, 1 problems/nothing in
// scope, 2 usage or IO error) and what each subcommand prints, against the golden history.

#include <sys/wait.h>

#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "replay/tests/golden.h"
#include "tests/run_command.h"

namespace auterity::testing {
namespace {

using outcome = testing::command_outcome;

outcome run(const std::string& args) {
  const std::string cmd = fmt::format("'{}' replay {} 2>/dev/null", AUTERITY_BIN, args);
  return testing::run_command(cmd);
}

class cli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    _fixture = new history_file(load_golden());
    _dir = new dir_guard{scratch_temp_dir("cli")};
    ASSERT_TRUE(build_data_dir(_dir->path + "/data", _fixture->partitions, _fixture->records));
    // The same history with one byte of lead-0002#4 changed, beside the original state.
    auto recs = _fixture->records;
    for (auto& r : recs) {
      const fbs::Envelope* e = decode_envelope(r.value);
      if (r.s == stream::executions && e && sv(e->record_id()) == "lead-0002#4") {
        r.value[r.value.find("test drive")] ^= 0x20;
      }
    }
    ASSERT_TRUE(tampered_data_dir(_dir->path + "/tampered", _fixture->partitions, recs,
                                  _dir->path + "/data"));
  }
  static void TearDownTestSuite() {
    delete _dir;
    delete _fixture;
  }
  static std::string data() { return _dir->path + "/data"; }

  static inline history_file* _fixture = nullptr;
  static inline dir_guard* _dir = nullptr;
};

TEST_F(cli, verify_exits_0_on_an_intact_history) {
  const outcome o = run("verify --data " + data());
  EXPECT_EQ(o.code, 0) << o.out;
  EXPECT_NE(o.out.find("verified: 102 executions records"), std::string::npos) << o.out;
  const outcome j = run("verify --format json --data " + data());
  EXPECT_EQ(j.code, 0);
  const auto report = nlohmann::json::parse(j.out);
  EXPECT_EQ(report["ok"], true);
  EXPECT_EQ(report["partitions"].size(), 2u);
}

TEST_F(cli, verify_exits_1_and_names_the_first_bad_event) {
  const outcome o = run("verify --data " + _dir->path + "/tampered");
  EXPECT_EQ(o.code, 1) << o.out;
  EXPECT_NE(o.out.find("CHAIN executions/1@"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("acme-motors/lead-0002: altered: event lead-0002#4"), std::string::npos)
      << o.out;
  EXPECT_NE(o.out.find("PROBLEMS FOUND"), std::string::npos) << o.out;
  const outcome chains_only =
      run("verify --chains --tenant bayside-auto --data " + _dir->path + "/tampered");
  EXPECT_EQ(chains_only.code, 0) << "bayside-auto's history is intact: " << chains_only.out;
  EXPECT_EQ(run("verify --tenant no-such-dealer --data " + data()).code, 1);
}

TEST_F(cli, usage_and_data_errors_exit_2) {
  const std::string d = " --data " + data();
  const std::vector<std::string> cases = {"verify" + d + " --bogus",
                                          "verify --data /nonexistent/auterity",
                                          "verify --data",
                                          "verify --threads x" + d,
                                          "verify --format xml" + d,
                                          "frobnicate",
                                          "",
                                          "timeline --from yesterday" + d,
                                          "timeline --format pdf" + d,
                                          "state" + d,
                                          "state --tenant acme-motors --as-of soon" + d};
  for (const std::string& args : cases) {
    EXPECT_EQ(run(args).code, 2) << "auterity replay " << args;
  }
}

TEST_F(cli, help_documents_the_exit_codes) {
  const outcome o = run("verify --help");
  EXPECT_EQ(o.code, 0);
  EXPECT_NE(o.out.find("Exit codes: 0 = verified"), std::string::npos) << o.out;
}

TEST_F(cli, timeline_shows_an_execution_and_exits_1_when_nothing_matches) {
  const outcome o = run("timeline --tenant acme-motors --execution lead-0002 --data " + data());
  EXPECT_EQ(o.code, 0);
  EXPECT_NE(o.out.find("== acme-motors / lead-0002 · new-lead v1 · succeeded"), std::string::npos)
      << o.out;
  EXPECT_NE(o.out.find("AI model relay-small-2024-05"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("notification: email to james@example.com"), std::string::npos) << o.out;
  EXPECT_EQ(run("timeline --tenant nobody --data " + data()).code, 1);
  const std::string page = _dir->path + "/t.html";
  EXPECT_EQ(run(fmt::format("timeline --format html --out {} --data {}", page, data())).code, 0);
  std::ifstream in(page);
  EXPECT_TRUE(in.good());
}

TEST_F(cli, state_as_of_a_time_shows_the_execution_then) {
  const outcome before =
      run("state --tenant bayside-auto --execution lead-0003 --as-of "
          "2023-11-14T22:13:20.700Z --data " +
          data());
  EXPECT_EQ(before.code, 0) << before.out;
  EXPECT_NE(before.out.find("bayside-auto / lead-0003: running new-lead v1"), std::string::npos)
      << before.out;
  EXPECT_NE(before.out.find("wait_reply         waiting"), std::string::npos) << before.out;
  const outcome after =
      run("state --tenant bayside-auto --execution lead-0003 --format json "
          "--data " +
          data());
  EXPECT_EQ(after.code, 0);
  EXPECT_EQ(nlohmann::json::parse(after.out)["status"], "succeeded");
  EXPECT_EQ(
      run("state --tenant bayside-auto --execution lead-0003 --as-of 0 --data " + data()).code, 1);
}

}  // namespace
}  // namespace auterity::testing
