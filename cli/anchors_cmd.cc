// Anchored chain heads from the command line (docs/anchors.md): the writer of `auterity run`
// (--anchor-key, --anchor-interval-s, --anchors-file, --verify-on-start) and `auterity anchors
// export`. `auterity replay verify --anchors` is in replay_cmd.cc.

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include "cli/cli.h"
#include "engine/anchors.h"
#include "engine/clock.h"

namespace auterity {

namespace {

std::string default_anchors_file(const std::string& data_dir) {
  return data_dir + "/anchors/anchors.jsonl";
}

// How often `run` on Kafka looks for partitions it was newly assigned, to anchor them.
constexpr std::chrono::seconds owned_check_interval{1};

}  // namespace

void add_anchor_flags(CLI::App* run, anchor_flags& f) {
  run->add_option("--anchor-key", f.key,
                  "Write signed anchors of the partitions' chain heads (docs/anchors.md) with "
                  "this Ed25519 private key (PEM), by reference: file:/path or env:NAME. With "
                  "--kafka: of the partitions this instance owns, into its own file. Default: no "
                  "anchors");
  run->add_option("--anchor-interval-s", f.interval_s,
                  "Seconds between two anchors (one is also written at every clean shutdown, "
                  "at start on the embedded log and, with --kafka, when the instance is "
                  "assigned partitions)")
      ->capture_default_str()
      ->check(CLI::Range(1, 86400));
  run->add_option("--anchors-file", f.file,
                  "Where the anchors go (default: <data>/anchors/anchors.jsonl; with --kafka put "
                  "it on storage that outlives the instance)");
  run->add_flag("--verify-on-start", f.verify_on_start,
                "Before deciding anything, recompute the chain of every partition the anchors "
                "file holds (with --kafka: before joining the group) and check it against every "
                "anchor in the file; a mismatch exits 4");
}

result<run_anchors> open_run_anchors(const anchor_flags& f, log& l, const std::string& data_dir,
                                     std::function<std::vector<uint32_t>()> owned) {
  if (f.key.empty()) {
    if (f.verify_on_start) return fail(errc::invalid, "--verify-on-start needs --anchor-key");
    return run_anchors();
  }
  auto key = anchor_key::load(f.key, /*need_private=*/true);
  if (!key) return std::unexpected(key.error());
  anchor_writer_options o;
  o.path = f.file.empty() ? default_anchors_file(data_dir) : f.file;
  o.verify_on_start = f.verify_on_start;
  std::error_code ec;
  const bool had_file = std::filesystem::exists(o.path, ec);
  std::vector<std::string> warnings;
  auto w = anchor_writer::open(l, std::move(*key), o, &warnings);
  for (const std::string& s : warnings) fmt::print(stderr, "auterity: anchors: {}\n", s);
  if (!w) return std::unexpected(w.error());
  if (f.verify_on_start && !had_file) {
    fmt::print(stderr, "auterity: anchors: no anchors file {} yet: nothing to verify on start\n",
               o.path);
  } else if (f.verify_on_start) {
    fmt::print(stderr, "auterity: anchors: the log matches every anchor in {}{}\n", o.path,
               owned ? " (every partition the file anchors, checked before joining the group)"
                     : "");
  }
  return run_anchors(std::move(*w), std::move(owned), f.interval_s);
}

run_anchors::run_anchors(std::unique_ptr<anchor_writer> writer,
                         std::function<std::vector<uint32_t>()> owned, int interval_s)
    : _writer(std::move(writer)), _owned(std::move(owned)), _interval(interval_s) {}

std::optional<std::vector<uint32_t>> run_anchors::owned_now() {
  if (!_owned) return std::nullopt;
  return _owned();
}

void run_anchors::write(bool force, const std::optional<std::vector<uint32_t>>& partitions) {
  _last_write = std::chrono::steady_clock::now();
  if (auto r = _writer->write(wall_now_ms(), force, partitions); !r) {
    fmt::print(stderr, "auterity: anchors: not written: {} ({})\n", r.error().message,
               errc_name(r.error().code));
  }
}

void run_anchors::at_start() {
  if (!_writer) return;
  // On Kafka the group assigns partitions after the start: tick() anchors them when it does.
  if (!_owned) write(/*force=*/true, std::nullopt);
  _last_write = _last_owned_check = std::chrono::steady_clock::now();
}

void run_anchors::tick() {
  if (!_writer) return;
  const auto now = std::chrono::steady_clock::now();
  if (_owned && now - _last_owned_check >= owned_check_interval) {
    _last_owned_check = now;
    std::vector<uint32_t> owned = _owned();
    const bool gained = std::any_of(owned.begin(), owned.end(), [&](uint32_t p) {
      return std::find(_anchored_owned.begin(), _anchored_owned.end(), p) ==
             _anchored_owned.end();
    });
    _anchored_owned = owned;
    if (gained) {
      write(/*force=*/false, owned);
      return;
    }
  }
  if (now - _last_write >= _interval) write(/*force=*/false, owned_now());
}

void run_anchors::before_stop() {
  if (_writer) _owned_at_stop = owned_now();
}

void run_anchors::after_stop() {
  if (_writer) write(/*force=*/true, _owned_at_stop);
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
