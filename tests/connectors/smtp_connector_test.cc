// The SMTP connector against a real SMTP server (aiosmtpd, tests/connectors/smtp_sink.py) on
// loopback: what arrives in the mailbox, how refusals are classified, AUTH and STARTTLS.

#include "connectors/smtp_connector.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/record.h"
#include "tests/connectors/connector_test_support.h"

namespace auterity {
namespace {

using json = nlohmann::json;
using testing::service_process;
namespace fs = std::filesystem;

constexpr const char* sink_py = CONNECTOR_TEST_DIR "/smtp_sink.py";

std::string notification(std::string_view to, std::string_view subject, std::string_view body,
                         std::string_view id = "e1/notify/1") {
  flatbuffers::FlatBufferBuilder fbb;
  auto s = [&](std::string_view v) { return fbb.CreateString(v.data(), v.size()); };
  auto p = fbs::CreateSendNotification(fbb, s("notify"), 1, s("email"), s(to), s(subject), s(body),
                                       s(id), 0);
  return finish_envelope(fbb, testing::command_header("e1", id, "e1#3"),
                         fbs::Payload::SendNotification, p.Union());
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

class smtp_test : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/auterity-smtp-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    _dir = tmpl;
    ::setenv("AUTERITY_TEST_SMTP_PASSWORD", "s3cret-pw", 1);
  }
  void TearDown() override {
    _sink.reset();
    std::error_code ec;
    fs::remove_all(_dir, ec);
  }

  // Starts the sink with extra arguments; returns its port.
  int start_sink(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {"python3", sink_py, (_dir / "mail").string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    _sink = std::make_unique<service_process>(argv);
    EXPECT_NE(_sink->port(), 0) << _sink->error();
    return _sink->port();
  }

  std::unique_ptr<connector> make(json section, http_tls_options tls = {}) {
    return testing::made(make_smtp_connector(section, tls));
  }
  // A connector with base_config to a sink started without options.
  std::unique_ptr<connector> plain_sink_connector() { return make(base_config(start_sink())); }

  json base_config(int port) {
    return {{"api", "smtp"},
            {"host", "127.0.0.1"},
            {"port", port},
            {"from", "sales@acme.example"},
            {"helo_name", "worker.acme.example"}};
  }

  ack_result send(connector& c, const std::string& bytes, int64_t deadline_ms = 0,
                  std::string_view key = "e1/notify/1") {
    return testing::run_command(c, bytes, deadline_ms, key);
  }
  // base_config plus the sink's user "sales" with the password from the environment.
  json auth_config(int port) {
    json cfg = base_config(port);
    cfg["username"] = "sales";
    cfg["password"] = "env:AUTERITY_TEST_SMTP_PASSWORD";
    return cfg;
  }
  // Sends "Hi"/"Hello" to `to` through a sink without options, which refuses it: the ack has
  // `status` and a reason with each of `reason_has`, and no mail is stored.
  void expect_refused(std::string_view to, fbs::AckStatus status,
                      std::initializer_list<std::string_view> reason_has) {
    SCOPED_TRACE(to);
    auto c = plain_sink_connector();
    ASSERT_TRUE(c);
    auto r = send(*c, notification(to, "Hi", "Hello"));
    EXPECT_EQ(r.status, status);
    for (std::string_view part : reason_has) {
      EXPECT_NE(r.error.find(part), std::string::npos) << part << " not in: " << r.error;
    }
    EXPECT_TRUE(mailbox().empty());
  }

  // The messages the sink stored, in arrival order.
  std::vector<json> mailbox() {
    std::vector<json> out;
    for (int n = 1;; ++n) {
      const fs::path p = _dir / "mail" / (std::to_string(n) + ".json");
      if (!fs::exists(p)) break;
      out.push_back(json::parse(read_file(p)));
    }
    return out;
  }
  std::string raw_message(int n) { return read_file(_dir / "mail" / (std::to_string(n) + ".eml")); }

  // A self-signed certificate for 127.0.0.1 (cert.pem, key.pem in the test directory).
  bool make_certificate() {
    return testing::make_self_signed_certificate(_dir, "127.0.0.1", "IP:127.0.0.1");
  }

  fs::path _dir;
  std::unique_ptr<service_process> _sink;
};

TEST_F(smtp_test, delivers_the_message_with_headers_body_and_message_id) {
  auto c = plain_sink_connector();
  ASSERT_TRUE(c);
  const std::string body =
      "Hello Dana,\n"
      "your quote is ready.\n"
      ".a line that starts with a dot\n"
      ".\n"
      "..two dots\n"
      "Thanks";
  auto r = send(*c, notification("dana@customer.example", "Your quote #42", body));
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;

  const json out = json::parse(r.output_json);
  EXPECT_EQ(out["channel"], "email");
  EXPECT_EQ(out["message_id"], "<e1.notify.1@auterity>");
  EXPECT_NE(out["accepted"].get<std::string>().find("queued as M1"), std::string::npos)
      << out.dump();

  const auto mail = mailbox();
  ASSERT_EQ(mail.size(), 1u);
  const json& m = mail[0];
  EXPECT_EQ(m["mail_from"], "sales@acme.example");
  EXPECT_EQ(m["rcpt_tos"], json::array({"dana@customer.example"}));
  EXPECT_EQ(m["from"], "sales@acme.example");
  EXPECT_EQ(m["to"], "dana@customer.example");
  EXPECT_EQ(m["subject"], "Your quote #42");
  EXPECT_EQ(m["message_id"], "<e1.notify.1@auterity>");
  EXPECT_EQ(m["mime_version"], "1.0");
  EXPECT_EQ(m["content_type"], "text/plain");
  EXPECT_EQ(m["charset"], "utf-8");
  EXPECT_FALSE(m["date"].get<std::string>().empty());
  EXPECT_EQ(m["body"], body + "\n");  // dot-stuffed lines arrive as written
  // On the wire: CRLF line endings only.
  const std::string raw = raw_message(1);
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '\n') {
      ASSERT_TRUE(i > 0 && raw[i - 1] == '\r') << "bare LF at " << i;
    }
  }
}

TEST_F(smtp_test, non_ascii_subject_and_body_arrive_intact) {
  auto c = plain_sink_connector();
  ASSERT_TRUE(c);
  const std::string subject =
      "Grüße aus München – Ihr Angebot für den Golf ✓ (Nr. 42, gültig 7 Tage)";
  const std::string body =
      "Liebe Frau Müller,\r\nanbei das Angebot: 21.990 €.\r\n.Punkt am Anfang\r\n" +
      std::string(200, 'x') + " Ende der langen Zeile\r\nViele Grüße";
  auto r = send(*c, notification("frau.mueller@kunde.example", subject, body));
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  const auto mail = mailbox();
  ASSERT_EQ(mail.size(), 1u);
  EXPECT_EQ(mail[0]["subject"], subject);
  std::string expected = body;
  for (size_t at; (at = expected.find("\r\n")) != std::string::npos;) expected.replace(at, 2, "\n");
  EXPECT_EQ(mail[0]["body"], expected + "\n");
  EXPECT_EQ(mail[0]["transfer_encoding"], "quoted-printable");
  // Every line on the wire fits SMTP's line limit.
  std::istringstream raw(raw_message(1));
  for (std::string line; std::getline(raw, line);) EXPECT_LE(line.size(), 998u);
}

TEST_F(smtp_test, busy_mailbox_is_retryable_with_the_server_reply) {
  expect_refused("busy@customer.example", fbs::AckStatus::RetryableFailure,
                 {"450", "mailbox busy", "RCPT TO"});
}

TEST_F(smtp_test, unknown_recipient_is_permanent_with_the_server_reply) {
  expect_refused("nobody@customer.example", fbs::AckStatus::PermanentFailure,
                 {"550", "User unknown"});
}

TEST_F(smtp_test, header_injection_is_refused_before_sending) {
  auto c = plain_sink_connector();
  ASSERT_TRUE(c);
  auto subject = send(
      *c, notification("dana@customer.example", "Hi\r\nBcc: everyone@victim.example", "Hello"));
  EXPECT_EQ(subject.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(subject.error.find("CR/LF"), std::string::npos) << subject.error;
  auto lf_only = send(*c, notification("dana@customer.example", "Hi\nBcc: x@y.example", "Hello"));
  EXPECT_EQ(lf_only.status, fbs::AckStatus::PermanentFailure);
  auto to = send(*c, notification("dana@customer.example\r\nBcc: x@y.example", "Hi", "Hello"));
  EXPECT_EQ(to.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(to.error.find("CR/LF"), std::string::npos) << to.error;
  for (const char* bad : {"", "no-at-sign", "a@b@c.example", "a@b.example, c@d.example",
                          "Dana <dana@customer.example>", "@customer.example"}) {
    auto r = send(*c, notification(bad, "Hi", "Hello"));
    EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure) << bad;
    EXPECT_NE(r.error.find("`to`"), std::string::npos) << r.error;
  }
  EXPECT_TRUE(mailbox().empty());
}

TEST_F(smtp_test, server_down_is_retryable) {
  const int port = start_sink();
  _sink->stop();
  auto c = make(base_config(port));
  ASSERT_TRUE(c);
  auto r = send(*c, notification("dana@customer.example", "Hi", "Hello"));
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("connecting"), std::string::npos) << r.error;
}

TEST_F(smtp_test, silent_server_times_out_at_the_deadline_as_retryable) {
  // A listening socket nobody accepts on: the connection is made, no greeting ever comes.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  auto c = make(base_config(ntohs(addr.sin_port)));
  ASSERT_TRUE(c);
  const int64_t start = wall_now_ms();
  auto r = send(*c, notification("dana@customer.example", "Hi", "Hello"), start + 500);
  const int64_t took = wall_now_ms() - start;
  ::close(fd);
  EXPECT_EQ(r.status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(r.error.find("deadline exceeded"), std::string::npos) << r.error;
  EXPECT_LT(took, 10'000) << "the call must end at its deadline, not hang";
}

TEST_F(smtp_test, auth_with_the_configured_user) {
  const int port = start_sink({"--auth", "sales:s3cret-pw"});
  json cfg = auth_config(port);
  cfg["allow_plain_auth"] = true;
  auto c = make(cfg);
  ASSERT_TRUE(c);
  auto r = send(*c, notification("dana@customer.example", "Hi", "Hello"));
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  const auto mail = mailbox();
  ASSERT_EQ(mail.size(), 1u);
  EXPECT_TRUE(mail[0]["authenticated"].get<bool>());

  // Without credentials the server refuses MAIL: permanent, and the reason says so.
  auto anonymous = make(base_config(port));
  ASSERT_TRUE(anonymous);
  auto refused = send(*anonymous, notification("dana@customer.example", "Hi", "Hello"));
  EXPECT_EQ(refused.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(refused.error.find("530"), std::string::npos) << refused.error;
}

TEST_F(smtp_test, wrong_password_is_permanent_and_never_shown) {
  const int port = start_sink({"--auth", "sales:other-pw"});
  json cfg = auth_config(port);
  cfg["allow_plain_auth"] = true;
  auto c = make(cfg);
  ASSERT_TRUE(c);
  auto r = send(*c, notification("dana@customer.example", "Hi", "Hello"));
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("535"), std::string::npos) << r.error;
  EXPECT_EQ(r.error.find("s3cret-pw"), std::string::npos) << r.error;
  EXPECT_TRUE(mailbox().empty());
}

TEST_F(smtp_test, starttls_then_auth) {
  ASSERT_TRUE(make_certificate());
  const std::string cert = (_dir / "cert.pem").string();
  const int port =
      start_sink({"--auth", "sales:s3cret-pw", "--starttls", cert, (_dir / "key.pem").string()});
  json cfg = auth_config(port);
  cfg["starttls"] = true;
  auto c = make(cfg, http_tls_options{cert, true});
  ASSERT_TRUE(c);
  auto r = send(*c, notification("dana@customer.example", "Über TLS", "Verschlüsselt."));
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  const auto mail = mailbox();
  ASSERT_EQ(mail.size(), 1u);
  EXPECT_TRUE(mail[0]["tls"].get<bool>());
  EXPECT_TRUE(mail[0]["authenticated"].get<bool>());
  EXPECT_EQ(mail[0]["subject"], "Über TLS");

  // A certificate the worker does not trust: nothing is sent.
  auto untrusting = make(cfg);  // system CAs only
  ASSERT_TRUE(untrusting);
  auto refused = send(*untrusting, notification("dana@customer.example", "Hi", "Hello"));
  EXPECT_NE(refused.status, fbs::AckStatus::Success);
  EXPECT_NE(refused.error.find("TLS handshake"), std::string::npos) << refused.error;
  EXPECT_EQ(mailbox().size(), 1u);
}

TEST_F(smtp_test, starttls_required_but_not_offered_sends_nothing) {
  const int port = start_sink();
  json cfg = base_config(port);
  cfg["starttls"] = true;
  auto c = make(cfg);
  ASSERT_TRUE(c);
  auto r = send(*c, notification("dana@customer.example", "Hi", "Hello"));
  EXPECT_EQ(r.status, fbs::AckStatus::PermanentFailure);
  EXPECT_NE(r.error.find("STARTTLS"), std::string::npos) << r.error;
  EXPECT_TRUE(mailbox().empty());
}

TEST_F(smtp_test, implicit_tls) {
  ASSERT_TRUE(make_certificate());
  const std::string cert = (_dir / "cert.pem").string();
  const int port = start_sink({"--tls", cert, (_dir / "key.pem").string()});
  json cfg = base_config(port);
  cfg["tls"] = true;
  auto c = make(cfg, http_tls_options{cert, true});
  ASSERT_TRUE(c);
  auto r = send(*c, notification("dana@customer.example", "Hi", "Hello"));
  ASSERT_EQ(r.status, fbs::AckStatus::Success) << r.error;
  ASSERT_EQ(mailbox().size(), 1u);
  EXPECT_TRUE(mailbox()[0]["tls"].get<bool>());
}

TEST_F(smtp_test, configuration_errors_name_the_key) {
  auto err = [](json section) {
    auto c = make_smtp_connector(section, {});
    return c ? std::string("(accepted)") : c.error().message;
  };
  const json ok = {{"api", "smtp"}, {"host", "127.0.0.1"}, {"from", "sales@acme.example"}};
  EXPECT_EQ(err(ok), "(accepted)");
  json unknown = ok;
  unknown["hots"] = "x";
  EXPECT_NE(err(unknown).find("hots"), std::string::npos);
  json no_host = ok;
  no_host.erase("host");
  EXPECT_NE(err(no_host).find("host: required"), std::string::npos);
  json bad_from = ok;
  bad_from["from"] = "sales";
  EXPECT_NE(err(bad_from).find("from"), std::string::npos);
  json unset = ok;
  unset["username"] = "sales";
  unset["password"] = "env:AUTERITY_TEST_SMTP_UNSET";
  unset["starttls"] = true;
  ::unsetenv("AUTERITY_TEST_SMTP_UNSET");
  EXPECT_NE(err(unset).find("env:AUTERITY_TEST_SMTP_UNSET"), std::string::npos) << err(unset);
  json literal = unset;
  literal["password"] = "hunter2";
  EXPECT_EQ(err(literal).find("hunter2"), std::string::npos);
  EXPECT_NE(err(literal).find("reference"), std::string::npos) << err(literal);
  json clear_text_auth = unset;
  clear_text_auth["starttls"] = false;
  clear_text_auth["password"] = "env:AUTERITY_TEST_SMTP_PASSWORD";
  EXPECT_NE(err(clear_text_auth).find("starttls"), std::string::npos) << err(clear_text_auth);
}

}  // namespace
}  // namespace auterity
