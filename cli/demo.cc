// The demo: two dealerships publish the sample "new-lead" workflow with their own parameters,
// leads come in, the engine scores them with the definition's own rules, grades them with a
// switch (hot leads alert sales), drafts replies (AI, or the template fallback when no model
// endpoint is configured), texts or emails the customer through the outbox on the channel they
// prefer (a second switch), and waits for the reply or follows up after a delay. Then each
// dealership runs a price-drop campaign: a foreach messages every lead interested in a model,
// a few at a time, under the dealership's notification policy (the opted-out lead is not
// messaged); and appraises a customer's trade-in, telling the customer through the shared
// notify-customer sub-workflow (a workflow step: a child execution with its own timeline).
// Progress while it runs; timelines at the end, each child's after its parent's.

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "node/node.h"
#include "processors/client.h"
#include "replay/timeline.h"
#include "workflows.h"

namespace auterity {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

struct dealership {
  const char* tenant;
  const char* params;
};

constexpr dealership dealerships[] = {
    {"acme-motors",
     R"({"dealer_name":"Acme Motors","reply_timeout_ms":3000,"followup_delay_ms":1500})"},
    {"bayside-auto",
     R"({"dealer_name":"Bayside Auto","reply_timeout_ms":2000,"followup_delay_ms":1000})"},
};

struct lead {
  const char* name;
  const char* vehicle;
  int budget;
  const char* timeline;
  const char* source;
  bool trade_in;
  const char* preferred;
  bool replies;
};

constexpr lead leads[] = {
    {"Maria Lopez", "2024 RAV4 Hybrid", 42000, "this_week", "website", true, "sms", true},
    {"James Chen", "F-150 Lariat", 61000, "this_month", "referral", false, "email", false},
    {"Aisha Patel", "Civic Sport", 24000, "browsing", "website", false, "sms", false},
    {"Tom Becker", "Model 3", 45000, "now", "walk_in", true, "email", true},
    {"Lena Novak", "CX-5", 31000, "this_month", "referral", true, "sms", true},
    {"Sam O'Neil", "Wrangler", 38000, "browsing", "facebook", false, "email", false},
};

// A trade-in to appraise per dealership: the lead (index into leads) and the car.
struct trade_in {
  uint32_t lead;
  const char* model;
  int book_value;
  int age_years;
  int mileage;
};

constexpr trade_in trade_ins[] = {
    {0, "2019 Corolla", 17500, 5, 62000},  // acme-motors: Maria Lopez, by text
    {3, "2017 Accord", 19000, 7, 108000},  // bayside-auto: Tom Becker, by email
};
static_assert(std::size(trade_ins) == std::size(dealerships));

json lead_input(const lead& l, uint32_t i) {
  std::string slug = fmt::format("customer{}", i + 1);
  json contact = {{"preferred", l.preferred}};
  if (std::string_view(l.preferred) == "sms") {
    contact["phone"] = fmt::format("+1555010{:04}", i + 1);
  } else {
    contact["email"] = slug + "@example.com";
  }
  return json{{"name", l.name},         {"vehicle", l.vehicle}, {"budget", l.budget},
              {"timeline", l.timeline}, {"source", l.source},   {"trade_in", l.trade_in},
              {"contact", contact}};
}

result<void> fresh_dir(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return {};
  if (!fs::exists(fs::path(dir) / "log" / "meta", ec) && !fs::is_empty(dir, ec)) {
    return fail(errc::invalid, fmt::format("refusing to clear {}: it is not an auterity data "
                                           "directory; pass --data with a new path",
                                           dir));
  }
  fs::remove_all(dir, ec);
  if (ec) return fail(errc::io, fmt::format("cannot clear {}: {}", dir, ec.message()));
  return {};
}

struct started {
  std::string tenant;
  std::string id;
  bool replies;
};

int64_t now_ms() {
  static system_clock c;
  return c.now_ms();
}

}  // namespace

int run_demo(const demo_flags& flags, const std::atomic<bool>& interrupted) {
  if (auto r = fresh_dir(flags.data_dir); !r) {
    fmt::print(stderr, "auterity demo: {}\n", r.error().message);
    return 2;
  }
  system_clock clk;
  node_options o;
  o.data_dir = flags.data_dir;
  o.partitions = flags.partitions;
  o.fsync = flags.fsync;
  o.kafka = flags.kafka;
  o.runtime = flags.runtime;
  o.metrics_address = flags.metrics_address;
  o.connectors_file = flags.connectors_file;
  o.worker_streams = flags.worker_streams;
  o.worker = flags.worker;
  auto opened = node::open(o, clk);
  if (!opened) {
    fmt::print(stderr, "auterity demo: {}\n", opened.error().message);
    return 2;
  }
  node& n = **opened;
  if (auto r = n.recover(); !r) {
    fmt::print(stderr, "auterity demo: recovery failed: {}\n", r.error().message);
    return 2;
  }
  n.start();
  const int64_t t0 = now_ms();
  if (flags.kafka) {
    fmt::print("auterity demo: {} partitions on Kafka {}, state in {}/\n", n.partitions(),
               flags.kafka->bootstrap, flags.data_dir);
  } else {
    fmt::print("auterity demo: {} partitions, embedded log in {}/\n", n.partitions(),
               flags.data_dir);
  }
  if (uint16_t port = n.metrics_port()) fmt::print("  Prometheus metrics on port {}\n", port);
  // Kafka keeps earlier runs' records: give this run's executions ids of their own.
  const std::string run_tag = flags.kafka ? fmt::format("{}-", t0 % 1000000) : "";

  for (const dealership& d : dealerships) {
    auto r = n.submit(d.tenant,
                      client::publish_definition({d.tenant, "", "publish-new-lead-v2", now_ms()},
                                                 new_lead_workflow_json, d.params));
    if (!r) return fmt::print(stderr, "auterity demo: {}\n", r.error().message), 2;
    fmt::print("  published new-lead v2 for {} with {}\n", d.tenant, d.params);
    const std::string campaign_params =
        json{{"dealer_name", json::parse(d.params)["dealer_name"]}}.dump();
    r = n.submit(d.tenant,
                 client::publish_definition({d.tenant, "", "publish-price-drop-v1", now_ms()},
                                            price_drop_workflow_json, campaign_params));
    if (!r) return fmt::print(stderr, "auterity demo: {}\n", r.error().message), 2;
    // The trade-in calls notify-customer: published in either order, it runs once both are.
    r = n.submit(d.tenant,
                 client::publish_definition({d.tenant, "", "publish-notify-customer-v1", now_ms()},
                                            notify_customer_workflow_json, campaign_params));
    if (!r) return fmt::print(stderr, "auterity demo: {}\n", r.error().message), 2;
    r = n.submit(d.tenant,
                 client::publish_definition({d.tenant, "", "publish-trade-in-v1", now_ms()},
                                            trade_in_workflow_json, campaign_params));
    if (!r) return fmt::print(stderr, "auterity demo: {}\n", r.error().message), 2;
    r = n.submit(d.tenant,
                 client::publish_policy({d.tenant, "", "policy-v1", now_ms()}, dealer_policy_json));
    if (!r) return fmt::print(stderr, "auterity demo: {}\n", r.error().message), 2;
  }
  fmt::print(
      "  published the AI routing and notification policy (processors/workflows/"
      "dealer_policy.json): local, openai, anthropic models; {}\n",
      flags.connectors_file.empty()
          ? "no provider configured (--connectors), so AI steps fail over and take the fallback"
          : "providers from " + flags.connectors_file);
  std::vector<started> runs;
  for (uint32_t i = 0; i < flags.executions; ++i) {
    const dealership& d = dealerships[i % std::size(dealerships)];
    const lead& l = leads[i % std::size(leads)];
    started s{d.tenant, fmt::format("lead-{}{:04}", run_tag, i + 1), l.replies};
    const std::string input = lead_input(l, i).dump();
    auto r = n.submit(s.tenant, client::start_execution({s.tenant, s.id, "start-" + s.id, now_ms()},
                                                        "new-lead", 0, input));
    if (!r) return fmt::print(stderr, "auterity demo: {}\n", r.error().message), 2;
    runs.push_back(std::move(s));
  }
  fmt::print("  started {} executions; customers who reply will text back after ~0.8s\n",
             runs.size());
  // A price-drop campaign per dealership, to the leads interested in the F-150.
  for (const dealership& d : dealerships) {
    json campaign_leads = json::array();
    for (uint32_t i = 0; i < std::size(leads); ++i) {
      json c = lead_input(leads[i], i)["contact"];
      campaign_leads.push_back({{"name", leads[i].name},
                                {"model", i % 2 == 0 ? "F-150" : leads[i].vehicle},
                                {"preferred", c["preferred"]},
                                {"phone", c.value("phone", "")},
                                {"email", c.value("email", "")}});
    }
    // Ids unique across tenants too: connectors key idempotency on the command id alone.
    started s{d.tenant, fmt::format("price-drop-{}{}-f150", run_tag, d.tenant), false};
    const std::string input = json{
        {"model", "F-150"},
        {"old_price", 61000},
        {"new_price", 57500},
        {"leads", campaign_leads}}.dump();
    auto r = n.submit(s.tenant, client::start_execution({s.tenant, s.id, "start-" + s.id, now_ms()},
                                                        "price-drop", 0, input));
    if (!r) return fmt::print(stderr, "auterity demo: {}\n", r.error().message), 2;
    runs.push_back(std::move(s));
  }
  fmt::print("  started a price-drop campaign (foreach) per dealership for the F-150\n");
  // A trade-in appraisal per dealership; its message goes out through a child execution.
  std::vector<std::pair<std::string, std::string>> children;  // tenant, child execution
  for (size_t k = 0; k < std::size(dealerships); ++k) {
    const dealership& d = dealerships[k];
    const trade_in& t = trade_ins[k];
    const lead& l = leads[t.lead];
    started s{d.tenant, fmt::format("trade-in-{}{}-{}", run_tag, d.tenant, t.lead + 1), false};
    const std::string input = json{{"name", l.name},
                                   {"car",
                                    {{"model", t.model},
                                     {"book_value", t.book_value},
                                     {"age_years", t.age_years},
                                     {"mileage", t.mileage}}},
                                   {"contact", lead_input(l, t.lead)["contact"]}}
                                  .dump();
    auto r = n.submit(s.tenant, client::start_execution({s.tenant, s.id, "start-" + s.id, now_ms()},
                                                        "trade-in", 0, input));
    if (!r) return fmt::print(stderr, "auterity demo: {}\n", r.error().message), 2;
    children.emplace_back(s.tenant, s.id + "/tell_customer/1");
    runs.push_back(std::move(s));
  }
  fmt::print(
      "  started a trade-in appraisal per dealership (its message: a notify-customer "
      "sub-workflow)\n");
  // An upstream retry of a start is harmless: the same execution id is rejected, not re-run.
  (void)n.submit(runs[0].tenant,
                 client::start_execution({runs[0].tenant, runs[0].id, "start-retry", now_ms()},
                                         "new-lead", 0, "{}"));

  bool replies_sent = false;
  std::string last_line;
  const bool tty = isatty(STDOUT_FILENO);
  while (!interrupted) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const int64_t elapsed = now_ms() - t0;
    if (!replies_sent && elapsed >= 800) {
      for (const started& s : runs) {
        if (!s.replies) continue;
        (void)n.submit(
            s.tenant,
            client::signal({s.tenant, s.id, "reply-" + s.id, now_ms()}, "customer_replied",
                           R"({"text":"Yes! Can I come in Saturday at 10?"})"));
      }
      replies_sent = true;
    }
    std::map<std::string, int> counts;
    for (const started& s : runs) {
      auto e = n.execution(s.tenant, s.id);
      counts[e ? std::string(exec_status_name(e->status)) : "queued"]++;
    }
    std::string line = fmt::format("[{:5.1f}s]", elapsed / 1000.0);
    for (const auto& [status, count] : counts) line += fmt::format("  {} {}", status, count);
    if (line.substr(9) != last_line) {
      if (tty) {
        fmt::print("\r{:<80}", line);
      } else {
        fmt::print("{}\n", line);
      }
      std::fflush(stdout);
      last_line = line.substr(9);
    }
    const int done = counts["succeeded"] + counts["failed"] + counts["cancelled"];
    if (done == static_cast<int>(runs.size()) && n.summary().quiescent) break;
    if (elapsed > flags.timeout_s * 1000) {
      fmt::print(stderr, "\nauterity demo: executions still running after {}s\n", flags.timeout_s);
      n.stop();
      return 1;
    }
  }
  if (tty) fmt::print("\n");
  if (flags.serve && !interrupted) {
    fmt::print("all executions finished; serving until Ctrl-C (--serve)\n");
    while (!interrupted) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  n.stop();
  if (interrupted) return 130;

  if (!flags.quiet) {
    auto print = [&](const std::string& tenant, const std::string& id) {
      const uint32_t p = home_partition(n.get_log(), tenant);
      auto e = n.execution(tenant, id);
      auto entries = load_timeline(n.get_log(), p, n.partition(p).store(), tenant, id);
      fmt::print("\n== {} / {}: {} ({} events)\n", tenant, id,
                 e ? exec_status_name(e->status) : "unknown", entries ? entries->size() : 0);
      if (entries) fmt::print("{}", format_timeline(*entries));
    };
    for (const started& s : runs) {
      print(s.tenant, s.id);
      for (const auto& [tenant, child] : children) {
        if (tenant == s.tenant && child.starts_with(s.id + "/")) print(tenant, child);
      }
    }
  }
  node_summary sum = n.summary();
  fmt::print("\nsummary: ");
  for (const auto& [status, count] : sum.executions_by_status) {
    fmt::print("{} {}  ", status, count);
  }
  fmt::print(
      "| {} executions records, {} commands, {} rejections, {} "
      "deadletters\n",
      sum.events, sum.commands, sum.rejections, sum.deadletters);
  fmt::print("notifications written to {}/outbox/notifications.jsonl\n", flags.data_dir);
  fmt::print("inspect: auterity timeline --data {} --tenant {} --id {}\n", flags.data_dir,
             runs[0].tenant, runs[0].id);
  return 0;
}

}  // namespace auterity
