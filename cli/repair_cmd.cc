// `auterity repair --data D --partition P`: salvage of a partition whose committed data is
// damaged (docs/salvage.md). Quarantines everything from the first bad frame on, declares the
// gap in <data>/log/repairs/ (which `replay verify` shows), moves the partition's state aside so
// the engine rebuilds it from what is left, and reports who lost what.

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <fmt/core.h>
#include <fmt/ranges.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "engine/clock.h"
#include "engine/embedded_log.h"
#include "engine/record.h"

namespace auterity {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// What one execution (or tenant, for tenant-level records) lost.
struct history_loss {
  uint64_t events = 0;
  std::string first_lost;  // record id of its first lost event ("<execution>#<seq>")
  std::vector<std::string> types;
  uint64_t ingress = 0, acks = 0, commands = 0, other = 0;
  std::vector<std::string> ingress_ids;  // the upstream's record ids
};

using loss_map = std::map<std::pair<std::string, std::string>, history_loss>;  // tenant, exec

loss_map losses_of(const partition_repair& r, uint64_t& undecodable) {
  loss_map out;
  for (const lost_record& l : r.lost) {
    const fbs::Envelope* e = decode_envelope(l.value);
    if (!e) {
      ++undecodable;
      continue;
    }
    history_loss& h = out[{std::string(sv(e->tenant_id())), std::string(sv(e->execution_id()))}];
    switch (l.s) {
      case stream::executions:
        if (h.events++ == 0) h.first_lost = std::string(sv(e->record_id()));
        h.types.emplace_back(payload_name(e->payload_type()));
        break;
      case stream::ingress:
        ++h.ingress;
        h.ingress_ids.emplace_back(sv(e->record_id()));
        break;
      case stream::acks:
        ++h.acks;
        break;
      case stream::commands_step:
      case stream::commands_ai:
      case stream::commands_notify:
        ++h.commands;
        break;
      default:
        ++h.other;
        break;
    }
  }
  return out;
}

// The damage in the repair's words (damage_text() speaks of what an open did).
std::string damage_summary(const log_damage& d) {
  return fmt::format("{} at byte {} of {}{}", d.problem, d.bad_pos, d.bad_segment,
                     d.committed ? ", with committed data after it" : " (a torn tail)");
}

json declaration(const partition_repair& r, const loss_map& losses, uint64_t undecodable,
                 int64_t now_ms, const std::string& reason) {
  json kept = json::object();
  for (int s = 0; s < stream_count; ++s) {
    kept[std::string(stream_name(static_cast<stream>(s)))] = r.kept[s];
  }
  json lost_streams = json::object();
  for (const lost_record& l : r.lost) {
    auto& n = lost_streams[std::string(stream_name(l.s))];
    n = n.is_null() ? 1 : n.get<uint64_t>() + 1;
  }
  json histories = json::array();
  for (const auto& [key, h] : losses) {
    histories.push_back({{"tenant", key.first},
                         {"execution", key.second},
                         {"events_lost", h.events},
                         {"first_lost_event", h.first_lost},
                         {"event_types", h.types},
                         {"ingress_lost", h.ingress_ids},
                         {"acks_lost", h.acks},
                         {"commands_lost", h.commands}});
  }
  const log_damage& d = *r.damage;
  return {{"repair", 1},
          {"time_ms", now_ms},
          {"partition", r.partition},
          {"reason", reason},
          {"damage", damage_summary(d)},
          {"committed_damage", d.committed},
          {"cut_segment", d.segment},
          {"cut_at_byte", d.file_pos},
          {"cut_bytes", r.cut_bytes},
          {"unreadable_bytes", r.unreadable_bytes},
          {"undecodable_records", undecodable},
          {"kept", kept},
          {"lost", lost_streams},
          {"histories", histories}};
}

// Written to a temporary name, fsynced, renamed: a declaration is whole or absent.
result<void> write_durably(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) return fail(errc::io, "cannot write " + tmp);
  }
  if (FILE* f = std::fopen(tmp.c_str(), "r+")) {
    ::fsync(fileno(f));
    std::fclose(f);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return fail(errc::io, fmt::format("rename {}: {}", tmp, ec.message()));
  return {};
}

void print_report(const partition_repair& r, const loss_map& losses, uint64_t undecodable) {
  const log_damage& d = *r.damage;
  fmt::print("partition {}: {}\n", r.partition, damage_summary(d));
  fmt::print("  cut {} bytes from byte {} of {} (everything after the last good commit)\n",
             r.cut_bytes, d.file_pos, d.segment);
  std::string kept;
  for (int s = 0; s < stream_count; ++s) {
    kept += fmt::format("{}{} {}", s ? ", " : "", stream_name(static_cast<stream>(s)), r.kept[s]);
  }
  fmt::print("  kept (records per stream; the new ends): {}\n", kept);
  fmt::print(
      "  lost: {} readable record(s) in the cut bytes, {} unreadable byte(s) (what they "
      "held is unknown){}\n",
      r.lost.size(), r.unreadable_bytes,
      undecodable ? fmt::format(", {} record(s) not envelopes", undecodable) : "");
  for (const auto& [key, h] : losses) {
    const auto& [tenant, execution] = key;
    std::string what;
    if (h.events) {
      what += fmt::format("{} event(s) from {} on ({}): its history now ends early", h.events,
                          h.first_lost, fmt::join(h.types, ", "));
    }
    if (h.ingress) {
      what += fmt::format("{}{} ingress command(s) ({})", what.empty() ? "" : "; ", h.ingress,
                          fmt::join(h.ingress_ids, ", "));
    }
    if (h.acks) what += fmt::format("{}{} ack(s)", what.empty() ? "" : "; ", h.acks);
    if (h.commands) what += fmt::format("{}{} command(s)", what.empty() ? "" : "; ", h.commands);
    if (h.other) what += fmt::format("{}{} other record(s)", what.empty() ? "" : "; ", h.other);
    fmt::print("    tenant {} {}: {}\n", tenant,
               execution.empty() ? "(tenant-level)" : "execution " + execution, what);
  }
}

}  // namespace

command_runner add_repair_commands(CLI::App& app) {
  struct flags {
    std::string data = "auterity-data", reason;
    uint32_t partition = 0;
  };
  auto f = std::make_shared<flags>();
  auto* cmd = app.add_subcommand(
      "repair",
      "Salvage a partition whose committed data is damaged (docs/salvage.md): quarantine "
      "everything from the first bad frame on, declare the gap for `replay verify`, move the "
      "partition's state aside (the engine rebuilds it), and report who lost what. Engine "
      "stopped. Exit 0 = repaired or nothing to repair, 2 = error");
  cmd->add_option("--data", f->data, "Data directory")->capture_default_str();
  cmd->add_option("--partition", f->partition, "The damaged partition")->required();
  cmd->add_option("--reason", f->reason, "Why (kept in the declaration), e.g. a ticket id");
  return [=]() -> std::optional<int> {
    if (!cmd->parsed()) return std::nullopt;
    auto fail_with = [](const error& e) {
      fmt::print(stderr, "auterity repair: {} ({})\n", e.message, errc_name(e.code));
      return 2;
    };
    if (!fs::is_directory(f->data)) {
      return fail_with(error{errc::not_found, f->data + " is not a directory"});
    }
    system_clock clk;
    const int64_t now_ms = clk.now_ms();
    const std::string decl_dir = f->data + "/log/repairs";
    const std::string decl_path = fmt::format("{}/p{:03}-{}.json", decl_dir, f->partition, now_ms);
    const std::string state = fmt::format("{}/state/p{:03}", f->data, f->partition);
    const std::string state_aside = fmt::format("{}.before-repair-{}", state, now_ms);
    json decl;
    uint64_t undecodable = 0;
    loss_map losses;
    // Before the cut: the declaration (durable), then the state aside. A crash anywhere
    // before the cut leaves the log as it was; the repair is then run again.
    auto before_cut = [&](const partition_repair& r) -> result<void> {
      losses = losses_of(r, undecodable);
      decl = declaration(r, losses, undecodable, now_ms, f->reason);
      std::error_code ec;
      fs::create_directories(decl_dir, ec);
      if (ec) return fail(errc::io, fmt::format("create {}: {}", decl_dir, ec.message()));
      if (auto w = write_durably(decl_path, decl.dump(2) + "\n"); !w) return w;
      if (fs::exists(state, ec)) {
        fs::rename(state, state_aside, ec);
        if (ec) return fail(errc::io, fmt::format("move {} aside: {}", state, ec.message()));
        decl["state_moved_to"] = state_aside;
      }
      return {};
    };
    auto r = repair_embedded_partition(f->data + "/log", f->partition, before_cut);
    if (!r) return fail_with(r.error());
    if (!r->damage) {
      fmt::print("partition {}: no damage: nothing after the last commit; nothing changed\n",
                 f->partition);
      return 0;
    }
    decl["quarantine"] = r->damage->quarantine;
    if (auto w = write_durably(decl_path, decl.dump(2) + "\n"); !w) return fail_with(w.error());
    print_report(*r, losses, undecodable);
    fmt::print("  moved to {}\n", r->damage->quarantine);
    if (decl.contains("state_moved_to")) {
      fmt::print(
          "  state: {} moved to {}; the engine rebuilds it from the log at its next "
          "start (commands cut with the log are emitted again, with the same ids)\n",
          state, state_aside);
    }
    fmt::print("  declared in {} (`auterity replay verify` shows it as a declared gap)\n",
               decl_path);
    return 0;
  };
}

}  // namespace auterity
