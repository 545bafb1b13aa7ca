// `auterity config check FILE`: validates a configuration file (cli/config.h) and prints the
// effective configuration, the environment applied, secrets masked.

#include <cstdlib>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include "cli/cli.h"
#include "cli/config.h"

namespace auterity {

command_runner add_config_commands(CLI::App& app) {
  auto* config = app.add_subcommand("config", "The configuration file (TOML, cli/README.md)");
  config->require_subcommand(1);
  auto file = std::make_shared<std::string>();
  auto* check = config->add_subcommand(
      "check",
      "Validate a configuration file and print the effective configuration (the AUTERITY_* "
      "environment applied, secrets masked); exit 0 valid, 2 not");
  check->add_option("file", *file, "Configuration file (TOML)")->required();
  return [config, check, file]() -> std::optional<int> {
    if (!config->parsed() || !check->parsed()) return std::nullopt;
    auto c = load_config_file(*file);
    if (c) {
      if (auto r = apply_config_env(*c, std::getenv); !r) c = std::unexpected(r.error());
    }
    if (!c) {
      fmt::print(stderr, "auterity: {}\n", c.error().message);
      return 2;
    }
    fmt::print("{}", describe_config(*c));
    if (auto props = resolve_kafka_properties(*c); !props) {
      fmt::print(stderr, "auterity: {}\n", props.error().message);
      return 2;
    }
    return 0;
  };
}

}  // namespace auterity
