// `auterity demo` as a user runs it (the real binary, embedded log): every execution ends well,
// and the timelines it prints show the workflow language at work — a switch taking a case and
// skipping the branches not taken, a foreach messaging each interested lead under the
// notification policy, and a workflow step whose child execution has a timeline of its own.

#include <stdlib.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
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

std::string read_whole(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(demo, runs_the_samples_and_shows_a_switch_a_foreach_and_a_sub_workflow) {
  std::string tmpl = ::testing::TempDir() + "/auterity-demo-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  const std::string dir = tmpl;
  const outcome o =
      sh(fmt::format("'{}' demo --no-fsync --executions 4 --data '{}/data'", AUTERITY_BIN, dir));
  ASSERT_EQ(o.code, 0) << o.out;
  auto shows = [&](const std::string& text) {
    EXPECT_NE(o.out.find(text), std::string::npos) << "the demo does not show: " << text;
  };
  // 4 leads, a campaign and a trade-in per dealership, and each trade-in's child: all succeed.
  shows("summary: succeeded 10  |");
  // new-lead: the grade switch and the channel switch with its branches not taken.
  shows(R"(step grade succeeded: {"case":"hot"})");
  shows("step send_email skipped (branch not taken: switch 'channel' took case 'sms')");
  // price-drop: one item per interested lead, the opted-out one suppressed by the policy.
  shows(
      "step campaign item 2 attempt 1 scheduled -> command "
      "price-drop-acme-motors-f150/campaign[2]/1");
  shows("step campaign item 1 attempt 1 (sms to +15550100003) suppressed: opted_out");
  // trade-in: the customer is told through a notify-customer child execution.
  shows(
      "step tell_customer attempt 1 scheduled -> child execution "
      "trade-in-acme-motors-1/tell_customer/1");
  shows("== acme-motors / trade-in-acme-motors-1/tell_customer/1: succeeded");
  shows("as a sub-workflow of execution trade-in-acme-motors-1 step tell_customer (depth 1)");
  shows(
      R"(step tell_customer succeeded: {"delivered":{"channel":"email","to":"customer4@example.com"}})");
  const std::string outbox = read_whole(dir + "/data/outbox/notifications.jsonl");
  EXPECT_NE(
      outbox.find("Hi Maria Lopez, Acme Motors can offer $10000 for your 2019 Corolla today."),
      std::string::npos)
      << outbox;
  EXPECT_NE(outbox.find("Trade-in offer $6500 to Tom Becker for the 2017 Accord: sent by email to "
                        "customer4@example.com"),
            std::string::npos)
      << outbox;
  std::filesystem::remove_all(dir);
}

}  // namespace
