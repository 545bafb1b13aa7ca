// Anchored chain heads from the command line (docs/anchors.md): the writer of `auterity run`
// (--anchor-key, --anchor-interval-s, --anchors-file, --verify-on-start) and `auterity anchors
// export`. `auterity replay verify --anchors` is in replay_cmd.cc.

#include <filesystem>
#include <fstream>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include "cli/cli.h"
#include "engine/anchors.h"

namespace auterity {

namespace {

std::string default_anchors_file(const std::string& data_dir) {
  return data_dir + "/anchors/anchors.jsonl";
}

}  // namespace

void add_anchor_flags(CLI::App* run, anchor_flags& f) {
  run->add_option("--anchor-key", f.key,
                  "Write signed anchors of every partition's chain head (docs/anchors.md) with "
                  "this Ed25519 private key (PEM), by reference: file:/path or env:NAME. "
                  "Default: no anchors");
  run->add_option("--anchor-interval-s", f.interval_s,
                  "Seconds between two anchors (one is also written at start and at every "
                  "clean shutdown)")
      ->capture_default_str()
      ->check(CLI::Range(1, 86400));
  run->add_option("--anchors-file", f.file,
                  "Where the anchors go (default: <data>/anchors/anchors.jsonl)");
  run->add_flag("--verify-on-start", f.verify_on_start,
                "Before deciding anything, recompute every partition's chain and check it "
                "against every anchor in the file; a mismatch exits 4");
}

result<std::unique_ptr<anchor_writer>> open_run_anchors(const anchor_flags& f, log& l,
                                                        const std::string& data_dir,
                                                        bool on_kafka) {
  if (f.key.empty()) {
    if (f.verify_on_start) return fail(errc::invalid, "--verify-on-start needs --anchor-key");
    return std::unique_ptr<anchor_writer>();
  }
  if (on_kafka) {
    return fail(errc::invalid,
                "anchors are written on the embedded log only for now (docs/anchors.md, Kafka)");
  }
  auto key = anchor_key::load(f.key, /*need_private=*/true);
  if (!key) return std::unexpected(key.error());
  anchor_writer_options o;
  o.path = f.file.empty() ? default_anchors_file(data_dir) : f.file;
  o.verify_on_start = f.verify_on_start;
  std::vector<std::string> warnings;
  auto w = anchor_writer::open(l, std::move(*key), o, &warnings);
  for (const std::string& s : warnings) fmt::print(stderr, "auterity: anchors: {}\n", s);
  if (!w) return std::unexpected(w.error());
  if (f.verify_on_start) {
    fmt::print(stderr, "auterity: anchors: the log matches every anchor in {}\n", o.path);
  }
  return w;
}

command_runner add_anchors_commands(CLI::App& app) {
  struct flags {
    std::string data = "auterity-data", file, out, key;
  };
  auto f = std::make_shared<flags>();
  auto* anchors = app.add_subcommand(
      "anchors", "Signed anchors of the partitions' chain heads (docs/anchors.md)");
  anchors->require_subcommand(1);
  auto* exp = anchors->add_subcommand(
      "export",
      "Copy the anchors for an auditor to keep elsewhere (reads only the anchors file: runs "
      "beside the engine). Exit 0 = copied, 1 = some lines skipped (listed), 2 = error");
  exp->add_option("--data", f->data, "Data directory")->capture_default_str();
  exp->add_option("--anchors-file", f->file,
                  "The engine's anchors file (default: <data>/anchors/anchors.jsonl)");
  exp->add_option("--out", f->out, "Write to FILE instead of stdout");
  exp->add_option("--anchor-public-key", f->key,
                  "Copy only lines signed with this key (PEM, file:/path or env:NAME)");
  return [=]() -> std::optional<int> {
    if (!exp->parsed()) return std::nullopt;
    auto fail_with = [](const error& e) {
      fmt::print(stderr, "auterity anchors: {} ({})\n", e.message, errc_name(e.code));
      return 2;
    };
    std::optional<anchor_key> key;
    if (!f->key.empty()) {
      auto k = anchor_key::load(f->key, /*need_private=*/false);
      if (!k) return fail_with(k.error());
      key = std::move(*k);
    }
    const std::string path = f->file.empty() ? default_anchors_file(f->data) : f->file;
    auto lines = read_anchors(path, key ? &*key : nullptr);
    if (!lines) return fail_with(lines.error());
    std::string out;
    size_t skipped = 0, kept = 0;
    for (const anchor_line& l : *lines) {
      const bool good = l.value && (!key || l.signature_ok);
      if (!good) {
        ++skipped;
        fmt::print(stderr, "auterity anchors: line {} skipped: {}\n", l.line,
                   l.value ? "not signed with the given key" : l.value.error().message);
        continue;
      }
      ++kept;
      out += l.text + "\n";
    }
    if (f->out.empty()) {
      fmt::print("{}", out);
    } else {
      std::ofstream o(f->out, std::ios::binary | std::ios::trunc);
      o << out;
      o.flush();
      if (!o) return fail_with(error{errc::io, "cannot write " + f->out});
      fmt::print(stderr, "auterity anchors: {} anchor(s) written to {}\n", kept, f->out);
    }
    return skipped ? 1 : 0;
  };
}

}  // namespace auterity
