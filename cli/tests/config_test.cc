// The configuration file (cli/config.h) and its precedence through the real `auterity` binary:
// flags over the environment over the file.

#include "cli/config.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace auterity {
namespace {

class config_test : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("auterity-config-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }

  // Runs the binary with `env` prepended; returns exit code, fills out with stdout+stderr.
  int run(const std::string& env, const std::string& args, std::string& out) {
    const std::string cmd =
        "cd " + dir_.string() + " && env " + env + " " + AUTERITY_BIN + " " + args + " 2>&1";
    FILE* p = ::popen(cmd.c_str(), "r");
    out.clear();
    char buf[4096];
    while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    const int status = ::pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  std::filesystem::path dir_;
};

char* no_env(const char*) { return nullptr; }

TEST_F(config_test, reads_every_setting_and_flattens_kafka_properties) {
  auto c = load_config_file(write("a.toml", R"(
data = "state-a"
partitions = 8
fsync = false
instance = "a"
metrics = "127.0.0.1:0"
workers = ["step", "notify"]
worker_concurrency = 4
command_deadline_ms = 5000
batch_records = 100
commit_interval_ms = 20
[kafka]
bootstrap = "b1:9093"
topic_prefix = "prod."
committers = 3
[kafka.properties]
"security.protocol" = "SASL_SSL"
sasl.mechanism = "SCRAM-SHA-512"
"sasl.password" = "env:AUTERITY_TEST_KAFKA_PASSWORD"
"socket.timeout.ms" = 20000
)"));
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(*c->data, "state-a");
  EXPECT_EQ(*c->partitions, 8u);
  EXPECT_FALSE(*c->fsync);
  EXPECT_EQ(*c->instance, "a");
  EXPECT_EQ(c->workers->size(), 2u);
  EXPECT_EQ(*c->worker_concurrency, 4u);
  EXPECT_EQ(*c->command_deadline_ms, 5000);
  EXPECT_EQ(*c->batch_records, 100u);
  EXPECT_EQ(*c->commit_interval_ms, 20);
  EXPECT_EQ(*c->kafka_bootstrap, "b1:9093");
  EXPECT_EQ(*c->topic_prefix, "prod.");
  EXPECT_EQ(*c->committers, 3);
  EXPECT_EQ(c->kafka_properties.at("sasl.mechanism"), "SCRAM-SHA-512");
  EXPECT_EQ(c->kafka_properties.at("socket.timeout.ms"), "20000");
  EXPECT_EQ(c->sources.at("instance").where, (dir_ / "a.toml").string() + ":5");
}

TEST_F(config_test, errors_name_the_key_and_suggest) {
  struct bad {
    const char* text;
    const char* says;
  } cases[] = {
      {"dta = \"x\"\n", "a.toml:1: unknown key dta; did you mean data?"},
      {"[kafka]\nbootstrp = \"x\"\n", "unknown key kafka.bootstrp; did you mean bootstrap?"},
      {"[kafka.properties]\n\"sasl.pasword\" = \"env:X\"\n",
       "unknown librdkafka property sasl.pasword; did you mean sasl.password?"},
      {"[kafka.properties]\n\"transactional.id\" = \"mine\"\n",
       "transactional.id is set by the engine and cannot be overridden"},
      {"[kafka.properties]\n\"isolation.level\" = \"read_uncommitted\"\n",
       "isolation.level is set by the engine"},
      {"[kafka.properties]\n\"enable.idempotence\" = false\n",
       "enable.idempotence is set by the engine"},
      {"[kafka.properties]\npartitioner = \"random\"\n", "partitioner is set by the engine"},
      {"[kafka.properties]\n\"sasl.password\" = \"hunter2\"\n",
       "sasl.password is a secret: give it by reference"},
      {"partitions = 0\n", "partitions = 0 is out of range 1..256"},
      {"[kafka]\ncommitters = 9\n", "kafka.committers = 9 is out of range 1..8"},
      {"workers = [\"step\", \"sms\"]\n", "unknown stream \"sms\""},
      {"fsync = \"yes\"\n", "fsync must be true or false"},
      {"partitions =\n", "a.toml:1:"},
  };
  for (const bad& b : cases) {
    auto c = load_config_file(write("a.toml", b.text));
    ASSERT_FALSE(c) << b.text;
    EXPECT_NE(c.error().message.find(b.says), std::string::npos)
        << b.text << " gave: " << c.error().message;
  }
  EXPECT_FALSE(load_config_file((dir_ / "missing.toml").string()));
}

TEST_F(config_test, environment_overrides_the_file_and_is_checked) {
  auto c = load_config_file(write("a.toml", "data = \"file\"\ninstance = \"file\"\n"));
  ASSERT_TRUE(c);
  ::setenv("AUTERITY_DATA", "env", 1);
  ::setenv("AUTERITY_BATCH_RECORDS", "64", 1);
  auto r = apply_config_env(*c, std::getenv);
  ::unsetenv("AUTERITY_DATA");
  ::unsetenv("AUTERITY_BATCH_RECORDS");
  ASSERT_TRUE(r);
  EXPECT_EQ(*c->data, "env");
  EXPECT_EQ(*c->instance, "file");
  EXPECT_EQ(*c->batch_records, 64u);
  EXPECT_EQ(c->sources.at("data").where, "environment AUTERITY_DATA");

  ::setenv("AUTERITY_PARTITIONS", "many", 1);
  auto bad = apply_config_env(*c, std::getenv);
  ::unsetenv("AUTERITY_PARTITIONS");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("AUTERITY_PARTITIONS"), std::string::npos);
  EXPECT_TRUE(apply_config_env(*c, no_env));
}

TEST_F(config_test, secrets_resolve_but_are_never_printed) {
  const std::string secret = "s3cr3t-value-9f1c";
  write("pw", secret + "\n");
  auto c = load_config_file(write("a.toml",
                                  "[kafka.properties]\n\"sasl.username\" = \"engine\"\n"
                                  "\"sasl.password\" = \"file:" +
                                      (dir_ / "pw").string() + "\"\n"));
  ASSERT_TRUE(c) << c.error().message;
  auto props = resolve_kafka_properties(*c);
  ASSERT_TRUE(props) << props.error().message;
  EXPECT_EQ(props->at("sasl.password"), secret);
  const std::string shown = describe_config(*c);
  EXPECT_EQ(shown.find(secret), std::string::npos) << shown;
  EXPECT_NE(shown.find("\"****\""), std::string::npos) << shown;

  std::string out;
  EXPECT_EQ(run("", "config check a.toml", out), 0) << out;
  EXPECT_EQ(out.find(secret), std::string::npos) << out;
  EXPECT_NE(out.find("sasl.username = \"engine\""), std::string::npos) << out;

  std::filesystem::remove(dir_ / "pw");
  EXPECT_EQ(run("", "config check a.toml", out), 2) << out;
  EXPECT_NE(out.find("sasl.password"), std::string::npos) << out;
  EXPECT_NE(out.find("cannot read the file"), std::string::npos) << out;
}

TEST_F(config_test, flags_win_over_environment_over_file) {
  // `status` names the data directory it was given when it does not exist.
  write("p.toml", "data = \"dir-file\"\n");
  std::string out;
  EXPECT_EQ(run("", "status --config p.toml", out), 2);
  EXPECT_NE(out.find("dir-file does not exist"), std::string::npos) << out;
  EXPECT_EQ(run("AUTERITY_CONFIG=p.toml", "status", out), 2);
  EXPECT_NE(out.find("dir-file does not exist"), std::string::npos) << out;
  EXPECT_EQ(run("AUTERITY_DATA=dir-env", "status --config p.toml", out), 2);
  EXPECT_NE(out.find("dir-env does not exist"), std::string::npos) << out;
  EXPECT_EQ(run("AUTERITY_DATA=dir-env", "status --config p.toml --data dir-flag", out), 2);
  EXPECT_NE(out.find("dir-flag does not exist"), std::string::npos) << out;
  // A broken file stops every command, naming the file and line.
  write("bad.toml", "instance = \"a\"\nbach_records = 5\n");
  EXPECT_EQ(run("", "run --config bad.toml --until-quiet", out), 2);
  EXPECT_NE(out.find("bad.toml:2: unknown key bach_records; did you mean batch_records?"),
            std::string::npos)
      << out;
}

}  // namespace
}  // namespace auterity
