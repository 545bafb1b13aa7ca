// The AI provider connectors against fake_ai.py on loopback, a server that speaks the OpenAI
// chat completions and Anthropic messages APIs with the real services' shapes: answers read,
// usage counted, errors classified, the key kept out of reasons, deadlines kept.

#include "connectors/ai_connectors.h"

#include <cstdlib>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/record.h"
#include "tests/connectors/connector_test_support.h"

namespace auterity {
namespace {

using json = nlohmann::json;
using testing::made;
using testing::service_process;

constexpr const char* fake_ai_py = CONNECTOR_TEST_DIR "/fake_ai.py";
constexpr const char* openai_key = "sk-test-openai-0123456789";
constexpr const char* anthropic_key = "sk-ant-test-0123456789";

std::string call_ai(const json& input, std::string_view model = "",
                    std::string_view id = "e1/summarise/1") {
  flatbuffers::FlatBufferBuilder fbb;
  auto s = [&](std::string_view v) { return fbb.CreateString(v.data(), v.size()); };
  auto p = fbs::CreateCallAi(fbb, s("summarise"), 1, s("standard"), s(input.dump()), s(id), 0,
                             s(""), s(model));
  return finish_envelope(fbb, testing::command_header("e1", id, "e1#2"), fbs::Payload::CallAi,
                         p.Union());
}

class ai_test : public ::testing::Test {
 protected:
  void SetUp() override {
    ::setenv("AUTERITY_TEST_OPENAI_KEY", openai_key, 1);
    ::setenv("AUTERITY_TEST_ANTHROPIC_KEY", anthropic_key, 1);
    ::setenv("AUTERITY_TEST_WRONG_KEY", "sk-wrong-key-999", 1);
    _server = std::make_unique<service_process>(std::vector<std::string>{
        "python3", fake_ai_py, "--openai-key", openai_key, "--anthropic-key", anthropic_key});
    ASSERT_NE(_server->port(), 0) << _server->error();
  }

  json openai_config() {
    return {{"api", "openai"},
            {"base_url", _server->url("/v1")},
            {"api_key", "env:AUTERITY_TEST_OPENAI_KEY"},
            {"model", "gpt-4o-mini"}};
  }
  json anthropic_config() {
    return {{"api", "anthropic"},
            {"base_url", _server->url()},
            {"api_key", "env:AUTERITY_TEST_ANTHROPIC_KEY"},
            {"model", "claude-3-5-haiku-latest"}};
  }

  std::unique_ptr<connector> openai(json cfg) { return made(make_openai_connector(cfg, {})); }
  std::unique_ptr<connector> anthropic(json cfg) { return made(make_anthropic_connector(cfg, {})); }

  ack_result run(connector& c, const std::string& bytes, int64_t deadline_ms = 0,
                 std::string_view key = "e1/summarise/1") {
    ack_result r = testing::run_command(c, bytes, deadline_ms, key);
    // Whatever happened, no key in the reason.
    EXPECT_EQ(r.error.find(openai_key), std::string::npos) << r.error;
    EXPECT_EQ(r.error.find(anthropic_key), std::string::npos) << r.error;
    EXPECT_EQ(r.error.find("sk-wrong-key-999"), std::string::npos) << r.error;
    return r;
  }

  void script(const std::string& prefix, const json& responses) {
    testing::fake_script(*_server, prefix, responses);
  }
  json requests() { return testing::fake_control(*_server, "GET", "/_requests"); }

  std::unique_ptr<service_process> _server;
};

// ------------------------------------------------------------------------------ good answers

TEST_F(ai_test, openai_answer_text_and_usage_are_read) {
  auto c = openai(openai_config());
  ASSERT_TRUE(c);
  auto r = run(*c, call_ai({{"prompt", "Summarise lead 42: wants a Civic, budget 25k"},
                            {"system", "You are a terse sales assistant."},
                            {"temperature", 0.2}}));
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  const json out = json::parse(r.output_json);
  EXPECT_TRUE(out["text"].get<std::string>().starts_with("Answer to prompt ")) << out.dump();
  EXPECT_EQ(out["model"], "gpt-4o-mini-2024-07-18");
  EXPECT_EQ(out["finish_reason"], "stop");
  EXPECT_EQ(r.model, "gpt-4o-mini-2024-07-18");
  EXPECT_GT(r.input_tokens, 10u);
  EXPECT_GT(r.output_tokens, 5u);
  EXPECT_EQ(r.cost_micros, 0);

  const json reqs = requests();
  ASSERT_EQ(reqs.size(), 1u);
  const json& q = reqs[0];
  EXPECT_EQ(q["path"], "/v1/chat/completions");
  EXPECT_EQ(q["headers"]["authorization"], std::string("Bearer ") + openai_key);
  EXPECT_EQ(q["headers"]["idempotency-key"], "e1/summarise/1");
  EXPECT_EQ(q["body"]["model"], "gpt-4o-mini");
  EXPECT_EQ(q["body"]["max_tokens"], ai_max_tokens_default);
  EXPECT_EQ(q["body"]["temperature"], 0.2);
  ASSERT_EQ(q["body"]["messages"].size(), 2u);
  EXPECT_EQ(q["body"]["messages"][0]["role"], "system");
  EXPECT_EQ(q["body"]["messages"][1]["role"], "user");
  EXPECT_EQ(q["body"]["messages"][1]["content"], "Summarise lead 42: wants a Civic, budget 25k");
}

TEST_F(ai_test, anthropic_answer_text_and_usage_are_read) {
  auto c = anthropic(anthropic_config());
  ASSERT_TRUE(c);
  auto r = run(
      *c, call_ai({{"prompt", "Summarise lead 42"}, {"system", "Be brief."}, {"max_tokens", 300}}));
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  const json out = json::parse(r.output_json);
  EXPECT_TRUE(out["text"].get<std::string>().starts_with("Answer to prompt ")) << out.dump();
  EXPECT_EQ(out["model"], "claude-3-5-haiku-latest");
  EXPECT_EQ(out["finish_reason"], "end_turn");
  EXPECT_EQ(r.model, "claude-3-5-haiku-latest");
  EXPECT_GT(r.input_tokens, 4u);
  EXPECT_GT(r.output_tokens, 5u);

  const json q = requests().at(0);
  EXPECT_EQ(q["path"], "/v1/messages");
  EXPECT_EQ(q["headers"]["x-api-key"], anthropic_key);
  EXPECT_EQ(q["headers"]["anthropic-version"], "2023-06-01");
  EXPECT_EQ(q["headers"]["idempotency-key"], "e1/summarise/1");
  EXPECT_FALSE(q["headers"].contains("authorization"));
  EXPECT_EQ(q["body"]["system"], "Be brief.");
  EXPECT_EQ(q["body"]["max_tokens"], 300);
  EXPECT_EQ(q["body"]["messages"],
            json::parse(R"([{"role":"user","content":"Summarise lead 42"}])"));
}

TEST_F(ai_test, the_commands_model_overrides_the_default) {
  auto c = anthropic(anthropic_config());
  ASSERT_TRUE(c);
  auto r = run(*c, call_ai({{"prompt", "hi"}}, "claude-3-opus-latest"));
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  EXPECT_EQ(r.model, "claude-3-opus-latest");
  EXPECT_EQ(requests().at(0)["body"]["model"], "claude-3-opus-latest");
}

TEST_F(ai_test, running_out_of_tokens_is_a_truncated_success) {
  auto c = openai(openai_config());
  ASSERT_TRUE(c);
  auto r = run(*c, call_ai({{"prompt", "Write a long story"}, {"max_tokens", 3}}));
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  const json out = json::parse(r.output_json);
  EXPECT_EQ(out["finish_reason"], "length");
  EXPECT_EQ(r.output_tokens, 3u);
}

TEST_F(ai_test, json_answers_are_asked_for_and_parsed) {
  auto o = openai(openai_config());
  ASSERT_TRUE(o);
  auto r = run(*o, call_ai({{"prompt", "Classify lead 42"}, {"json", true}}));
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  json out = json::parse(r.output_json);
  EXPECT_TRUE(out["json"].contains("digest")) << out.dump();
  const json q = requests().at(0);
  EXPECT_EQ(q["body"]["response_format"]["type"], "json_object");

  auto a = anthropic(anthropic_config());
  ASSERT_TRUE(a);
  r = run(*a, call_ai({{"prompt", "Classify lead 42"}, {"json", true}}));
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  out = json::parse(r.output_json);
  EXPECT_TRUE(out["json"].contains("digest")) << out.dump();

  // A model that answers prose when asked for JSON: retryable, the next answer may be right.
  script("/v1/messages", json::array({{{"text", "Sure! Here is the classification: hot."}}}));
  r = run(*a, call_ai({{"prompt", "Classify lead 42"}, {"json", true}}));
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("JSON object"), std::string::npos) << r.error;
}

TEST_F(ai_test, local_openai_compatible_server_without_a_key) {
  // Like llama.cpp's server or Ollama's /v1: no key configured, none sent.
  service_process local({"python3", fake_ai_py, "--openai-key", ""});
  ASSERT_NE(local.port(), 0) << local.error();
  auto c = openai({{"api", "openai"}, {"base_url", local.url("/v1/")}, {"model", "llama3"}});
  ASSERT_TRUE(c);
  auto r = run(*c, call_ai({{"prompt", "hello"}}));
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  EXPECT_EQ(r.model, "llama3-2024-07-18");
}

// ------------------------------------------------------------------------------ failures

TEST_F(ai_test, rate_limits_and_server_errors_are_retryable_with_the_providers_message) {
  auto o = openai(openai_config());
  ASSERT_TRUE(o);
  script("/v1/chat/completions", json::array({{{"status", 429}}, {{"status", 500}}}));
  auto r = run(*o, call_ai({{"prompt", "hi"}}));
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("HTTP 429"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("Rate limit reached"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("retry-after 20"), std::string::npos) << r.error;
  r = run(*o, call_ai({{"prompt", "hi"}}));
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("HTTP 500"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("The server had an error"), std::string::npos) << r.error;
  r = run(*o, call_ai({{"prompt", "hi"}}));  // the script is used up: a normal answer
  EXPECT_EQ(r.status, fbs::AckStatus::Success) << r.error;

  auto a = anthropic(anthropic_config());
  ASSERT_TRUE(a);
  r = run(*a, call_ai({{"prompt", "hi"}}, "always-529"));
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("HTTP 529"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("overloaded_error: Overloaded"), std::string::npos) << r.error;
  script("/v1/messages", json::array({{{"status", 429}}}));
  r = run(*a, call_ai({{"prompt", "hi"}}));
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("rate_limit_error"), std::string::npos) << r.error;
}

TEST_F(ai_test, a_wrong_key_is_permanent_and_not_shown) {
  json cfg = openai_config();
  cfg["api_key"] = "env:AUTERITY_TEST_WRONG_KEY";
  auto o = openai(cfg);
  ASSERT_TRUE(o);
  auto r = run(*o, call_ai({{"prompt", "hi"}}));
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("HTTP 401"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("Incorrect API key"), std::string::npos) << r.error;

  json acfg = anthropic_config();
  acfg["api_key"] = "env:AUTERITY_TEST_WRONG_KEY";
  auto a = anthropic(acfg);
  ASSERT_TRUE(a);
  r = run(*a, call_ai({{"prompt", "hi"}}));
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("HTTP 401"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("authentication_error: invalid x-api-key"), std::string::npos) << r.error;
}

TEST_F(ai_test, a_provider_echoing_the_key_is_redacted) {
  auto o = openai(openai_config());
  ASSERT_TRUE(o);
  script("/v1/chat/completions",
         json::array({{{"status", 403},
                       {"message", std::string("key ") + openai_key + " is not allowed here"}}}));
  auto r = run(*o, call_ai({{"prompt", "hi"}}));  // run() checks the key is not in the reason
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("[redacted] is not allowed here"), std::string::npos) << r.error;
}

TEST_F(ai_test, requests_the_provider_rejects_are_permanent) {
  auto a = anthropic(anthropic_config());
  ASSERT_TRUE(a);
  auto r = run(*a, call_ai({{"prompt", "hi"}, {"temperature", 1.7}}));
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("HTTP 400"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("temperature"), std::string::npos) << r.error;

  auto o = openai(openai_config());
  ASSERT_TRUE(o);
  r = run(*o, call_ai({{"prompt", "hi"}}, "always-404"));
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("model_not_found"), std::string::npos) << r.error;
}

TEST_F(ai_test, bad_step_input_is_permanent_without_a_call) {
  auto o = openai(openai_config());
  ASSERT_TRUE(o);
  for (const json& in :
       {json{{"system", "no prompt"}}, json{{"prompt", 42}},
        json{{"prompt", "hi"}, {"max_tokens", -1}}, json{{"prompt", "hi"}, {"temperature", "hot"}},
        json{{"prompt", std::string(ai_prompt_bytes_max + 1, 'x')}}}) {
    auto r = run(*o, call_ai(in));
    EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure) << in.dump().substr(0, 80);
    EXPECT_FALSE(r.error.empty());
  }
  EXPECT_TRUE(requests().empty());
}

TEST_F(ai_test, a_slow_answer_times_out_at_the_deadline_as_retryable) {
  auto a = anthropic(anthropic_config());
  ASSERT_TRUE(a);
  script("/v1/messages", json::array({{{"delay_ms", 5000}}}));
  const int64_t start = wall_now_ms();
  auto r = run(*a, call_ai({{"prompt", "hi"}}), start + 500);
  const int64_t took = wall_now_ms() - start;
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("deadline exceeded"), std::string::npos) << r.error;
  EXPECT_LT(took, 4000) << "returned only when the server answered, not at the deadline";

  // timeout_ms in the configuration caps a generous command deadline.
  json cfg = openai_config();
  cfg["timeout_ms"] = 300;
  auto o = openai(cfg);
  ASSERT_TRUE(o);
  auto slow = run(*o, call_ai({{"prompt", "hi"}}, "slow-5000"), wall_now_ms() + 60'000);
  EXPECT_EQ(slow.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(slow.error.find("within 300 ms"), std::string::npos) << slow.error;
}

TEST_F(ai_test, malformed_answers_are_retryable_with_a_clear_reason) {
  auto o = openai(openai_config());
  ASSERT_TRUE(o);
  script("/v1/chat/completions",
         json::array({{{"malformed", true}}, {{"drop", "usage"}}, {{"drop", "choices"}}}));
  auto r = run(*o, call_ai({{"prompt", "hi"}}));
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("not JSON"), std::string::npos) << r.error;
  r = run(*o, call_ai({{"prompt", "hi"}}));
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("usage.prompt_tokens missing"), std::string::npos) << r.error;
  r = run(*o, call_ai({{"prompt", "hi"}}));
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("choices[0].message.content missing"), std::string::npos) << r.error;

  auto a = anthropic(anthropic_config());
  ASSERT_TRUE(a);
  script("/v1/messages", json::array({{{"drop", "content"}}}));
  r = run(*a, call_ai({{"prompt", "hi"}}));
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("content[] missing"), std::string::npos) << r.error;
}

TEST_F(ai_test, an_unreachable_provider_is_retryable) {
  const std::string url = _server->url("/v1");
  _server->stop();
  json cfg = openai_config();
  cfg["base_url"] = url;
  auto o = openai(cfg);
  ASSERT_TRUE(o);
  auto r = run(*o, call_ai({{"prompt", "hi"}}));
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("openai"), std::string::npos) << r.error;
}

TEST_F(ai_test, configuration_errors_name_the_key_or_reference) {
  auto err = [](json cfg, bool anthropic) {
    auto c = anthropic ? make_anthropic_connector(cfg, {}) : make_openai_connector(cfg, {});
    return c ? std::string("(accepted)") : c.error().message;
  };
  EXPECT_EQ(err(openai_config(), false), "(accepted)");
  ::unsetenv("AUTERITY_TEST_UNSET_KEY");
  json unset = anthropic_config();
  unset["api_key"] = "env:AUTERITY_TEST_UNSET_KEY";
  EXPECT_NE(err(unset, true).find("env:AUTERITY_TEST_UNSET_KEY"), std::string::npos)
      << err(unset, true);
  json literal = openai_config();
  literal["api_key"] = "sk-literal-secret";
  EXPECT_EQ(err(literal, false).find("sk-literal-secret"), std::string::npos);
  EXPECT_NE(err(literal, false).find("api_key"), std::string::npos);
  json no_key = anthropic_config();
  no_key.erase("api_key");
  EXPECT_NE(err(no_key, true).find("api_key: required"), std::string::npos);
  json unknown = openai_config();
  unknown["anthropic_version"] = "2023-06-01";  // not an OpenAI key
  EXPECT_NE(err(unknown, false).find("anthropic_version"), std::string::npos);
  json bad_url = openai_config();
  bad_url["base_url"] = "ftp://example.com";
  EXPECT_NE(err(bad_url, false).find("base_url"), std::string::npos);
  json no_model = openai_config();
  no_model.erase("model");
  EXPECT_NE(err(no_model, false).find("model: required"), std::string::npos);
}

}  // namespace
}  // namespace auterity
