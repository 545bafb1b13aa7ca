// `auterity replay`: auditors' subcommands (replay issue). Placeholder until it lands.

#include <CLI/CLI.hpp>

#include "engine/cli/cli.h"

namespace auterity {

command_runner add_replay_commands(CLI::App&) {
  return [] { return std::optional<int>(); };
}

}  // namespace auterity
