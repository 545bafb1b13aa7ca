// The HTTP client and the HTTP connectors against fake_services.py on loopback: a server that
// speaks the Twilio, WhatsApp Cloud API and Slack webhook protocols (with their checks and
// error shapes), a generic echo/webhook endpoint, scripted failures and HTTPS.

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "connectors/http_connectors.h"
#include "engine/http_client.h"
#include "engine/record.h"
#include "tests/connectors/connector_test_support.h"

namespace auterity {
namespace {

using json = nlohmann::json;
using testing::made;
using testing::service_process;

constexpr const char* crm_token = "crm-secret-token-8c1f";
constexpr const char* twilio_token = "twilio-token";
constexpr const char* whatsapp_token = "whatsapp-token";
constexpr const char* webhook_secret = "whsec-5b2e";
constexpr const char* slack_path = "/services/T0001/B0001/sl4ck-s3cret-p4th";

std::string fake_services() { return std::string(CONNECTOR_TEST_DIR) + "/fake_services.py"; }

// A command envelope; `execute` gets the decoded view of these bytes.
struct command {
  std::string bytes;
  const fbs::Envelope& envelope() const { return *decode_envelope(bytes); }
};

envelope_header header(std::string_view id) {
  return testing::command_header("lead-42", id, "lead-42#3");
}

command run_step(const json& input, std::string_view id = "lead-42/call_crm/1") {
  flatbuffers::FlatBufferBuilder fbb;
  auto payload = fbs::CreateRunStep(fbb, fbb.CreateString("call_crm"), 1, fbb.CreateString("http"),
                                    fbb.CreateString(input.dump()), fbb.CreateString(id), 0);
  return {finish_envelope(fbb, header(id), fbs::Payload::RunStep, payload.Union())};
}

command notify(std::string_view channel, std::string_view to, std::string_view subject,
               std::string_view body, std::string_view id = "lead-42/notify/1") {
  flatbuffers::FlatBufferBuilder fbb;
  auto payload = fbs::CreateSendNotification(
      fbb, fbb.CreateString("notify"), 1, fbb.CreateString(channel), fbb.CreateString(to),
      fbb.CreateString(subject), fbb.CreateString(body), fbb.CreateString(id), 0);
  return {finish_envelope(fbb, header(id), fbs::Payload::SendNotification, payload.Union())};
}

class HttpConnectorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::setenv("AUTERITY_TEST_CRM_TOKEN", crm_token, 1);
    ::setenv("AUTERITY_TEST_TWILIO_TOKEN", twilio_token, 1);
    ::setenv("AUTERITY_TEST_WHATSAPP_TOKEN", whatsapp_token, 1);
    ::setenv("AUTERITY_TEST_WEBHOOK_SECRET", webhook_secret, 1);
    ::unsetenv("AUTERITY_TEST_UNSET");
    _svc = std::make_unique<service_process>(std::vector<std::string>{
        "python3", fake_services(), "--twilio-sid", "AC123", "--twilio-token", twilio_token,
        "--whatsapp-token", whatsapp_token, "--webhook-secret", webhook_secret});
    ASSERT_NE(_svc->port(), 0) << _svc->error();
    ::setenv("AUTERITY_TEST_SLACK_URL", url(slack_path).c_str(), 1);
  }

  std::string url(const std::string& path) const { return _svc->url(path); }

  command_context ctx(int64_t budget_ms = 5000, std::string_view key = "lead-42/call_crm/1") {
    return command_context{wall_now_ms() + budget_ms, key};
  }

  void script(const std::string& prefix, const json& responses) {
    testing::fake_script(*_svc, prefix, responses);
  }
  json requests() { return testing::fake_control(*_svc, "GET", "/_requests"); }
  json effects() { return testing::fake_control(*_svc, "GET", "/_effects"); }

  std::unique_ptr<connector> http_step(json section = json::object()) {
    return made(make_http_step_connector(section, {}));
  }
  std::unique_ptr<connector> twilio(
      const std::string& token_ref = "env:AUTERITY_TEST_TWILIO_TOKEN") {
    return made(make_twilio_connector({{"api", "twilio"},
                                       {"base_url", url("")},
                                       {"account_sid", "AC123"},
                                       {"auth_token", token_ref},
                                       {"from", "+15550001"}},
                                      {}));
  }
  std::unique_ptr<connector> whatsapp(
      const std::string& token_ref = "env:AUTERITY_TEST_WHATSAPP_TOKEN") {
    return made(make_whatsapp_connector({{"api", "whatsapp"},
                                         {"base_url", url("/v19.0")},
                                         {"phone_number_id", "1234567890"},
                                         {"token", token_ref}},
                                        {}));
  }
  std::unique_ptr<connector> slack() {
    return made(make_slack_connector(
        {{"api", "slack"}, {"webhook_url", "env:AUTERITY_TEST_SLACK_URL"}}, {}));
  }
  std::unique_ptr<connector> webhook(
      const std::string& secret_ref = "env:AUTERITY_TEST_WEBHOOK_SECRET") {
    return made(make_webhook_connector(
        {{"api", "webhook"}, {"url", url("/hooks/auterity")}, {"signing_secret", secret_ref}}, {}));
  }

  std::unique_ptr<service_process> _svc;
};

std::string all_of(const ack_result& r) { return r.output_json + "\n" + r.error; }

// ------------------------------------------------------------------------------ client

TEST(HttpClient, ParseUrlSplitsAndExplains) {
  auto u = parse_url("https://api.example.com/v1/x?y=1#frag");
  ASSERT_TRUE(u);
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "api.example.com");
  EXPECT_EQ(u->port, "443");
  EXPECT_EQ(u->target, "/v1/x?y=1");
  u = parse_url("http://[::1]:8080");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->port, "8080");
  EXPECT_EQ(u->target, "/");
  EXPECT_EQ(parse_url("http://h?q=1")->target, "/?q=1");

  EXPECT_NE(parse_url("ftp://h/").error().message.find("ftp"), std::string::npos);
  EXPECT_NE(parse_url("example.com/x").error().message.find("http://"), std::string::npos);
  EXPECT_NE(parse_url("http://h:99999/").error().message.find("port"), std::string::npos);
  EXPECT_NE(parse_url("http:///x").error().message.find("no host"), std::string::npos);
  EXPECT_NE(parse_url("http://u:p@h/").error().message.find("user"), std::string::npos);
  EXPECT_NE(parse_url("http://h/a b").error().message.find("space"), std::string::npos);
}

TEST_F(HttpConnectorsTest, ClientSendsHostAgentAndBodyAndLowersHeaderNames) {
  http_request r;
  r.method = "PUT";
  r.url = url("/things/7?x=1");
  r.headers = {{"X-Custom", "v"}};
  r.body = "payload";
  auto res = http_call(r);
  ASSERT_TRUE(res) << res.error().message;
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->header("Content-Type"), "application/json");
  for (const auto& [name, value] : res->headers) {  // the server writes "Content-Type"
    EXPECT_TRUE(std::ranges::none_of(name, [](char c) { return std::isupper(c); })) << name;
  }
  const json echo = json::parse(res->body);
  EXPECT_EQ(echo["method"], "PUT");
  EXPECT_EQ(echo["path"], "/things/7");
  EXPECT_EQ(echo["query"], "x=1");
  EXPECT_EQ(echo["body"], "payload");
  EXPECT_EQ(echo["headers"]["host"], "127.0.0.1:" + std::to_string(_svc->port()));
  EXPECT_EQ(echo["headers"]["user-agent"], "auterity");
  EXPECT_EQ(echo["headers"]["content-length"], "7");
  EXPECT_EQ(echo["headers"]["connection"], "close");
  EXPECT_EQ(echo["headers"]["x-custom"], "v");
}

TEST_F(HttpConnectorsTest, ClientStopsAtTheDeadline) {
  script("/slow", {{{"delay_ms", 8000}}});
  http_request r;
  r.method = "GET";
  r.url = url("/slow");
  const int64_t start = wall_now_ms();
  r.deadline_ms = start + 300;
  auto res = http_call(r);
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().code, errc::timeout);
  EXPECT_NE(res.error().message.find("deadline"), std::string::npos) << res.error().message;
  // It gave up instead of waiting for the server's answer, 8 s later.
  EXPECT_LT(wall_now_ms() - start, 6000);
}

TEST_F(HttpConnectorsTest, ClientLimitsBodiesAndRefusesBadRequests) {
  script("/big", {{{"status", 200}, {"body_bytes", http_response_bytes_max + 1}}});
  http_request r;
  r.method = "GET";
  r.url = url("/big");
  auto res = http_call(r);
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().code, errc::too_large);

  r.url = url("/x");
  r.method = "POST";
  r.body.assign(http_request_bytes_max + 1, 'x');
  EXPECT_EQ(http_call(r).error().code, errc::too_large);
  r.body.clear();
  r.method = "TRACE";
  EXPECT_EQ(http_call(r).error().code, errc::invalid);
  r.method = "GET";
  r.headers = {{"X-Token", "secret\r\nInjected: 1"}};
  auto bad = http_call(r);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::invalid);
  EXPECT_EQ(bad.error().message.find("secret"), std::string::npos);
  EXPECT_EQ(requests().size(), 1u);  // only /big reached the server
}

TEST_F(HttpConnectorsTest, ClientReportsRefusedConnection) {
  const std::string dead = url("/");
  _svc->stop();
  http_request r;
  r.method = "GET";
  r.url = dead;
  auto res = http_call(r);
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().code, errc::io);
  EXPECT_NE(res.error().message.find("connecting"), std::string::npos) << res.error().message;
}

// ---------------------------------------------------------------------------- http step

TEST_F(HttpConnectorsTest, HttpStepGetRoundTrip) {
  auto step = http_step();
  const auto r = step->execute(run_step({{"url", url("/crm/leads?id=42")}}).envelope(), ctx());
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  const json out = json::parse(r.output_json);
  EXPECT_EQ(out["status"], 200);
  EXPECT_EQ(out["headers"]["content-type"], "application/json");
  EXPECT_EQ(out["body"]["method"], "GET");
  EXPECT_EQ(out["body"]["path"], "/crm/leads");
  EXPECT_EQ(out["body"]["query"], "id=42");
  // The command id travels as the idempotency key.
  EXPECT_EQ(out["body"]["headers"]["idempotency-key"], "lead-42/call_crm/1");
}

TEST_F(HttpConnectorsTest, HttpStepPostsJsonOrTextBodies) {
  auto step = http_step();
  auto r = step->execute(
      run_step({{"url", url("/crm/leads")}, {"body", {{"name", "Ana"}, {"budget", 42000}}}})
          .envelope(),
      ctx());
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  json out = json::parse(r.output_json);
  EXPECT_EQ(out["body"]["method"], "POST");  // a body makes POST the default
  EXPECT_EQ(out["body"]["headers"]["content-type"], "application/json");
  EXPECT_EQ(out["body"]["body"], json({{"name", "Ana"}, {"budget", 42000}}));

  r = step->execute(run_step({{"method", "patch"},
                              {"url", url("/notes/1")},
                              {"headers", {{"Content-Type", "text/csv"}}},
                              {"body", "a,b\n1,2"}})
                        .envelope(),
                    ctx());
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  out = json::parse(r.output_json);
  EXPECT_EQ(out["body"]["method"], "PATCH");
  EXPECT_EQ(out["body"]["headers"]["content-type"], "text/csv");
  EXPECT_EQ(out["body"]["body"], "a,b\n1,2");
}

TEST_F(HttpConnectorsTest, HttpStepSecretReachesServerButNoAck) {
  auto step = http_step({{"secrets", {{"crm", "env:AUTERITY_TEST_CRM_TOKEN"}}}});
  const json input = {{"url", url("/crm/leads")},
                      {"headers", {{"Authorization", "Bearer ${secret:crm}"}}}};
  const command cmd = run_step(input);
  // The command (what the event log holds) carries only the reference.
  EXPECT_EQ(cmd.bytes.find(crm_token), std::string::npos);
  auto r = step->execute(cmd.envelope(), ctx());
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  EXPECT_EQ(requests()[0]["headers"]["authorization"], std::string("Bearer ") + crm_token);
  // The echo server sent the header back; the output has it redacted.
  EXPECT_EQ(all_of(r).find(crm_token), std::string::npos) << r.output_json;
  EXPECT_EQ(json::parse(r.output_json)["body"]["headers"]["authorization"], "Bearer [redacted]");

  // A failing call whose URL carries the secret in its query: the error shows neither.
  r = step->execute(run_step({{"url", url("/status/404?token=${secret:crm}")}}).envelope(), ctx());
  ASSERT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_EQ(all_of(r).find(crm_token), std::string::npos) << r.error;
  EXPECT_EQ(r.error.find("token="), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("GET " + url("/status/404")), std::string::npos) << r.error;
}

TEST_F(HttpConnectorsTest, HttpStepMissingSecretsAreClearErrors) {
  // Unknown name in the input: permanent, names it.
  auto step = http_step({{"secrets", {{"crm", "env:AUTERITY_TEST_CRM_TOKEN"}}}});
  auto r = step->execute(
      run_step({{"url", url("/x")}, {"headers", {{"X-Key", "${secret:erp}"}}}}).envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("erp"), std::string::npos) << r.error;

  // Unset at start: the connector is not built, the reference is named.
  auto c = make_http_step_connector({{"secrets", {{"crm", "env:AUTERITY_TEST_UNSET"}}}}, {});
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("env:AUTERITY_TEST_UNSET"), std::string::npos)
      << c.error().message;

  // Unset after start (rotated away): permanent, names the reference, nothing sent.
  ::setenv("AUTERITY_TEST_UNSET", "was-here-once", 1);
  step = http_step({{"secrets", {{"gone", "env:AUTERITY_TEST_UNSET"}}}});
  ::unsetenv("AUTERITY_TEST_UNSET");
  r = step->execute(
      run_step({{"url", url("/x")}, {"headers", {{"X-Key", "${secret:gone}"}}}}).envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("env:AUTERITY_TEST_UNSET"), std::string::npos) << r.error;
  EXPECT_TRUE(requests().empty());
}

TEST_F(HttpConnectorsTest, HttpStepClassifiesStatuses) {
  auto step = http_step();
  auto call = [&](const std::string& path) {
    return step->execute(run_step({{"url", url(path)}}).envelope(), ctx());
  };
  auto r = call("/status/500");
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("HTTP 500"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("status 500 as asked"), std::string::npos) << r.error;
  script("/busy", {{{"status", 429}, {"headers", {{"Retry-After", "7"}}}, {"body", "slow down"}}});
  r = call("/busy");
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("retry after 7 s"), std::string::npos) << r.error;
  EXPECT_EQ(call("/status/408").status, fbs::AckStatus::RetryableFailure);
  r = call("/status/404");
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("HTTP 404"), std::string::npos) << r.error;
  EXPECT_EQ(call("/status/400").status, fbs::AckStatus::PermanentFailure);

  r = step->execute(run_step({{"url", url("/x")}, {"expect", {201}}}).envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("201"), std::string::npos) << r.error;
  r = step->execute(run_step({{"url", url("/status/404")}, {"expect", {200, 404}}}).envelope(),
                    ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  EXPECT_EQ(json::parse(r.output_json)["status"], 404);
}

TEST_F(HttpConnectorsTest, HttpStepPastTheDeadlineIsRetryable) {
  script("/slow", {{{"delay_ms", 8000}}});
  auto step = http_step();
  const int64_t start = wall_now_ms();
  auto r = step->execute(run_step({{"url", url("/slow")}}).envelope(), ctx(300));
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("deadline"), std::string::npos) << r.error;
  EXPECT_LT(wall_now_ms() - start, 6000);  // returned at its deadline, not with the server

  // The connector's own timeout_ms shortens a longer command deadline.
  script("/slow", {{{"delay_ms", 8000}}});
  step = http_step({{"timeout_ms", 300}});
  r = step->execute(run_step({{"url", url("/slow")}}).envelope(), ctx(20'000));
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("deadline"), std::string::npos) << r.error;
}

TEST_F(HttpConnectorsTest, HttpStepNetworkErrorsAreRetryable) {
  auto step = http_step();
  script("/drop", {{{"close", true}}});
  auto r = step->execute(run_step({{"url", url("/drop")}}).envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure) << r.error;
  const std::string dead = url("/x");
  _svc->stop();
  r = step->execute(run_step({{"url", dead}}).envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("GET " + dead), std::string::npos) << r.error;
}

TEST_F(HttpConnectorsTest, HttpStepMalformedJsonAnswerBecomesText) {
  script("/broken", {{{"malformed", true}}});
  auto r = http_step()->execute(run_step({{"url", url("/broken")}}).envelope(), ctx());
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  const json out = json::parse(r.output_json);
  ASSERT_TRUE(out["body"].is_string());
  EXPECT_NE(out["body"].get<std::string>().find("oops"), std::string::npos);
}

TEST_F(HttpConnectorsTest, HttpStepRejectsBadInput) {
  auto step = http_step();
  auto r = step->execute(run_step({{"method", "GET"}}).envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("url"), std::string::npos) << r.error;
  r = step->execute(run_step({{"method", "BREW"}, {"url", url("/x")}}).envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("BREW"), std::string::npos) << r.error;
  r = step->execute(run_step({{"url", "ftp://x/"}}).envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  r = step->execute(run_step({{"url", url("/x")}, {"header", json::object()}}).envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("header"), std::string::npos) << r.error;
  json many = json::object();
  for (size_t i = 0; i <= http_step_headers_max; ++i) many["X-H" + std::to_string(i)] = "v";
  r = step->execute(run_step({{"url", url("/x")}, {"headers", many}}).envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_TRUE(requests().empty());
}

TEST_F(HttpConnectorsTest, HttpStepOversizeAnswerFailsClearly) {
  script("/huge", {{{"status", 200}, {"body", std::string(100 * 1024, 'x')}}});
  auto r = http_step()->execute(run_step({{"url", url("/huge")}}).envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("limit"), std::string::npos) << r.error;
}

TEST_F(HttpConnectorsTest, HttpStepConfigValidation) {
  auto c = make_http_step_connector({{"secret", json::object()}}, {});
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("unknown key 'secret'"), std::string::npos);
  c = make_http_step_connector({{"secrets", {{"crm", "hunter2-literal"}}}}, {});
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("reference"), std::string::npos) << c.error().message;
  EXPECT_EQ(c.error().message.find("hunter2"), std::string::npos) << c.error().message;
  c = make_http_step_connector({{"timeout_ms", -1}}, {});
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("timeout_ms"), std::string::npos);
}

// -------------------------------------------------------------------------------- HTTPS

class HttpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    _dir = std::filesystem::temp_directory_path() /
           ("auterity-tls-" + std::to_string(::getpid()) + "-" + std::to_string(wall_now_ms()));
    std::filesystem::create_directories(_dir);
    // Certificate for the name "localhost" only, so 127.0.0.1 shows a name mismatch.
    ASSERT_TRUE(testing::make_self_signed_certificate(_dir, "localhost", "DNS:localhost"));
    _svc = std::make_unique<service_process>(
        std::vector<std::string>{"python3", fake_services(), "--tls", (_dir / "cert.pem").string(),
                                 (_dir / "key.pem").string()});
    ASSERT_NE(_svc->port(), 0) << _svc->error();
  }
  void TearDown() override {
    _svc.reset();
    std::filesystem::remove_all(_dir);
  }
  std::string https(const std::string& host, const std::string& path) const {
    return "https://" + host + ":" + std::to_string(_svc->port()) + path;
  }
  http_tls_options trusted() const { return {.ca_file = (_dir / "cert.pem").string()}; }

  std::filesystem::path _dir;
  std::unique_ptr<service_process> _svc;
};

TEST_F(HttpsTest, TrustedCaWorksForTheCertifiedName) {
  auto c = make_http_step_connector(json::object(), trusted());
  ASSERT_TRUE(c);
  auto r = (*c)->execute(run_step({{"url", https("localhost", "/crm?x=1")}}).envelope(),
                         {wall_now_ms() + 5000, "k/1/1"});
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  EXPECT_EQ(json::parse(r.output_json)["body"]["path"], "/crm");
}

TEST_F(HttpsTest, UntrustedOrMismatchedCertificateFailsVerification) {
  http_request r;
  r.method = "GET";
  r.url = https("localhost", "/x");
  auto res = http_call(r);  // the system's CAs do not know the test certificate
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().code, errc::io);
  EXPECT_NE(res.error().message.find("certificate verification failed"), std::string::npos)
      << res.error().message;

  r.url = https("127.0.0.1", "/x");  // trusted, but issued for another name
  res = http_call(r, trusted());
  ASSERT_FALSE(res);
  EXPECT_NE(res.error().message.find("mismatch"), std::string::npos) << res.error().message;

  auto c = make_http_step_connector(json::object(), {});
  auto ack = (*c)->execute(run_step({{"url", https("localhost", "/x")}}).envelope(),
                           {wall_now_ms() + 5000, "k/1/1"});
  EXPECT_NE(ack.error.find("certificate"), std::string::npos) << ack.error;

  r.url = https("localhost", "/x");
  res = http_call(r, {.ca_file = (_dir / "missing.pem").string()});
  ASSERT_FALSE(res);
  EXPECT_NE(res.error().message.find("missing.pem"), std::string::npos) << res.error().message;
}

// ------------------------------------------------------------------------------- Twilio

TEST_F(HttpConnectorsTest, TwilioSendsFormWithAuthAndIdempotencyToken) {
  auto sms = twilio();
  const std::string text = "Hi Ana & team: 100% ready? ünïcode + symbols = ok";
  auto r = sms->execute(notify("sms", "+15550100", "", text).envelope(), ctx());
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  const json out = json::parse(r.output_json);
  EXPECT_EQ(out["channel"], "sms");
  EXPECT_EQ(out["status"], "queued");
  EXPECT_TRUE(out["sid"].get<std::string>().starts_with("SM"));
  const json e = effects();
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0]["path"], "/2010-04-01/Accounts/AC123/Messages.json");
  EXPECT_EQ(e[0]["form"]["Body"], text);
  EXPECT_EQ(e[0]["form"]["To"], "+15550100");
  EXPECT_EQ(e[0]["form"]["From"], "+15550001");
  EXPECT_EQ(requests()[0]["headers"]["i-twilio-idempotency-token"], "lead-42/call_crm/1");
  EXPECT_EQ(all_of(r).find(twilio_token), std::string::npos);
}

TEST_F(HttpConnectorsTest, TwilioSameKeyTwiceIsOneMessage) {
  auto sms = twilio();
  const command cmd = notify("sms", "+15550100", "", "once");
  auto first = sms->execute(cmd.envelope(), ctx(5000, "lead-42/notify/1"));
  auto again = sms->execute(cmd.envelope(), ctx(5000, "lead-42/notify/1"));
  ASSERT_EQ(first.status, fbs::AckStatus::Success) << first.error;
  ASSERT_EQ(again.status, fbs::AckStatus::Success) << again.error;
  EXPECT_EQ(json::parse(first.output_json)["sid"], json::parse(again.output_json)["sid"]);
  EXPECT_EQ(requests().size(), 2u);
  EXPECT_EQ(effects().size(), 1u);
}

TEST_F(HttpConnectorsTest, TwilioErrorsCarryCodeAndMessage) {
  auto r = twilio()->execute(notify("sms", "555-CALL-ME", "", "hi").envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("21211"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("Invalid 'To' Phone Number"), std::string::npos) << r.error;

  ::setenv("AUTERITY_TEST_WRONG", "wrong-token", 1);
  r = twilio("env:AUTERITY_TEST_WRONG")
          ->execute(notify("sms", "+15550100", "", "hi").envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("20003"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("HTTP 401"), std::string::npos) << r.error;
  EXPECT_EQ(r.error.find("wrong-token"), std::string::npos) << r.error;

  r = twilio()->execute(notify("sms", "", "", "hi").envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("recipient"), std::string::npos) << r.error;

  script("/2010-04-01", {{{"status", 503}}, {{"malformed", true}, {"status", 201}}});
  r = twilio()->execute(notify("sms", "+15550100", "", "hi").envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("HTTP 503"), std::string::npos) << r.error;
  r = twilio()->execute(notify("sms", "+15550100", "", "hi").envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("not a Twilio message"), std::string::npos) << r.error;
  EXPECT_TRUE(effects().empty());
}

// ----------------------------------------------------------------------------- WhatsApp

TEST_F(HttpConnectorsTest, WhatsappSendsTextMessage) {
  auto wa = whatsapp();
  auto r =
      wa->execute(notify("whatsapp", "15550100", "New lead", "Ana, budget 42k").envelope(), ctx());
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  const json out = json::parse(r.output_json);
  EXPECT_EQ(out["channel"], "whatsapp");
  EXPECT_TRUE(out["message_id"].get<std::string>().starts_with("wamid."));
  const json req = requests()[0];
  EXPECT_EQ(req["path"], "/v19.0/1234567890/messages");
  EXPECT_EQ(req["headers"]["idempotency-key"], "lead-42/call_crm/1");
  const json sent = json::parse(req["body"].get<std::string>());
  EXPECT_EQ(sent["messaging_product"], "whatsapp");
  EXPECT_EQ(sent["to"], "15550100");
  EXPECT_EQ(sent["text"]["body"], "*New lead*\nAna, budget 42k");
  EXPECT_EQ(all_of(r).find(whatsapp_token), std::string::npos);

  auto again = wa->execute(notify("whatsapp", "15550100", "New lead", "Ana").envelope(), ctx());
  EXPECT_EQ(again.output_json, r.output_json);
  EXPECT_EQ(effects().size(), 1u);
}

TEST_F(HttpConnectorsTest, WhatsappErrors) {
  ::setenv("AUTERITY_TEST_WRONG", "wrong-token", 1);
  auto r = whatsapp("env:AUTERITY_TEST_WRONG")
               ->execute(notify("whatsapp", "15550100", "", "hi").envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("WhatsApp error 190"), std::string::npos) << r.error;
  EXPECT_EQ(r.error.find("wrong-token"), std::string::npos) << r.error;

  r = whatsapp()->execute(notify("whatsapp", "", "", "hi").envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("recipient"), std::string::npos) << r.error;

  // Meta throttles with HTTP 400 and a rate-limit code: retry.
  script("/v19.0",
         {{{"status", 400},
           {"body", {{"error", {{"message", "(#131056) Pair rate limit hit"}, {"code", 131056}}}}}},
          {{"status", 429}},
          {{"malformed", true}}});
  r = whatsapp()->execute(notify("whatsapp", "15550100", "", "hi").envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("131056"), std::string::npos) << r.error;
  r = whatsapp()->execute(notify("whatsapp", "15550100", "", "hi").envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  r = whatsapp()->execute(notify("whatsapp", "15550100", "", "hi").envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("not a WhatsApp send result"), std::string::npos) << r.error;
}

// -------------------------------------------------------------------------------- Slack

TEST_F(HttpConnectorsTest, SlackPostsTextAndKeepsTheWebhookSecret) {
  auto r = slack()->execute(notify("slack", "", "Hot lead", "Ana, 42k").envelope(), ctx());
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  EXPECT_EQ(json::parse(r.output_json)["channel"], "slack");
  const json e = effects();
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(json::parse(e[0]["body"].get<std::string>())["text"], "*Hot lead*\nAna, 42k");

  script("/services", {{{"status", 400}, {"body", "invalid_payload"}},
                       {{"status", 429}, {"body", "rate_limited"}},
                       {{"status", 500}, {"body", "internal_error"}}});
  r = slack()->execute(notify("slack", "", "", "x").envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("invalid_payload"), std::string::npos) << r.error;
  EXPECT_EQ(r.error.find("sl4ck-s3cret-p4th"), std::string::npos) << r.error;
  r = slack()->execute(notify("slack", "", "", "x").envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("rate_limited"), std::string::npos) << r.error;
  r = slack()->execute(notify("slack", "", "", "x").envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);

  _svc->stop();  // unreachable: the error still names only the origin
  r = slack()->execute(notify("slack", "", "", "x").envelope(), ctx());
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_EQ(r.error.find("sl4ck-s3cret-p4th"), std::string::npos) << r.error;
  EXPECT_EQ(r.error.find("T0001"), std::string::npos) << r.error;
}

// ------------------------------------------------------------------------------ webhook

TEST_F(HttpConnectorsTest, WebhookIsSignedAndCarriesTheNotification) {
  auto hook = webhook();
  auto r = hook->execute(notify("webhook", "crm", "New lead", "Ana").envelope(),
                         ctx(5000, "lead-42/notify/1"));
  // The server verified the HMAC with the shared secret before answering 200.
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  const json e = effects();
  ASSERT_EQ(e.size(), 1u);
  const json sent = json::parse(e[0]["body"].get<std::string>());
  EXPECT_EQ(sent, json({{"id", "lead-42/notify/1"},
                        {"tenant", "acme"},
                        {"execution", "lead-42"},
                        {"step", "notify"},
                        {"channel", "webhook"},
                        {"to", "crm"},
                        {"subject", "New lead"},
                        {"body", "Ana"}}));
  EXPECT_TRUE(
      requests()[0]["headers"]["x-auterity-signature"].get<std::string>().starts_with("sha256="));

  // Redelivered: one effect.
  r = hook->execute(notify("webhook", "crm", "New lead", "Ana").envelope(),
                    ctx(5000, "lead-42/notify/1"));
  EXPECT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  EXPECT_EQ(effects().size(), 1u);

  // Signed with another secret: the receiver refuses it, and that is permanent.
  ::setenv("AUTERITY_TEST_WRONG", "other-secret", 1);
  r = webhook("env:AUTERITY_TEST_WRONG")
          ->execute(notify("webhook", "crm", "", "x").envelope(), ctx(5000, "lead-42/notify/2"));
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("HTTP 401"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("bad signature"), std::string::npos) << r.error;
}

// ------------------------------------------------------------------------------- config

TEST_F(HttpConnectorsTest, NotificationConfigValidation) {
  json sms = {{"api", "twilio"},
              {"account_sid", "AC123"},
              {"auth_token", "env:AUTERITY_TEST_TWILIO_TOKEN"},
              {"from", "+15550001"}};
  EXPECT_TRUE(make_twilio_connector(sms, {}));  // base_url defaults to api.twilio.com

  json bad = sms;
  bad["region"] = "ie1";
  auto c = make_twilio_connector(bad, {});
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("unknown key 'region'"), std::string::npos);

  bad = sms;
  bad["auth_token"] = "sk_live_literal";
  c = make_twilio_connector(bad, {});
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("auth_token"), std::string::npos) << c.error().message;
  EXPECT_NE(c.error().message.find("reference"), std::string::npos) << c.error().message;
  EXPECT_EQ(c.error().message.find("sk_live_literal"), std::string::npos) << c.error().message;

  bad = sms;
  bad.erase("from");
  c = make_twilio_connector(bad, {});
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("from: required"), std::string::npos) << c.error().message;

  bad = sms;
  bad["auth_token"] = "env:AUTERITY_TEST_UNSET";
  c = make_twilio_connector(bad, {});
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("env:AUTERITY_TEST_UNSET"), std::string::npos);

  bad = sms;
  bad["base_url"] = "api.twilio.com";
  EXPECT_FALSE(make_twilio_connector(bad, {}));

  c = make_whatsapp_connector({{"api", "whatsapp"}, {"phone_number_id", "123"}}, {});
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("token: required"), std::string::npos) << c.error().message;

  c = make_slack_connector({{"api", "slack"}, {"webhook_url", "https://hooks.slack.com/x"}}, {});
  ASSERT_FALSE(c);  // the webhook URL is a secret: a literal one is refused
  EXPECT_EQ(c.error().message.find("hooks.slack.com"), std::string::npos) << c.error().message;

  c = make_webhook_connector(
      {{"api", "webhook"}, {"url", "http://127.0.0.1:9/h"}, {"timeout_ms", 0}}, {});
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("timeout_ms"), std::string::npos);
  EXPECT_TRUE(make_webhook_connector({{"api", "webhook"}, {"url", "http://127.0.0.1:9/h"}}, {}));
}

}  // namespace
}  // namespace auterity
