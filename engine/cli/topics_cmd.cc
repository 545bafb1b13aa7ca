// `auterity topics`: the topic catalog on a Kafka cluster (Kafka issue). Placeholder.

#include <CLI/CLI.hpp>

#include "engine/cli/cli.h"

namespace auterity {

command_runner add_topics_commands(CLI::App&) {
  return [] { return std::optional<int>(); };
}

}  // namespace auterity
