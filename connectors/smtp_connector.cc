#include "connectors/smtp_connector.h"

#include <openssl/ssl.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <optional>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <nlohmann/json.hpp>

#include "engine/clock.h"
#include "engine/secrets.h"

namespace auterity {

using json = nlohmann::json;

namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;

struct smtp_config {
  std::string host;
  std::string port;
  std::string from;
  std::string username;
  std::string password;
  std::string helo_name = "localhost";
  bool starttls = false;
  bool tls = false;  // SMTPS: TLS from the first byte
  bool allow_plain_auth = false;
  bool verify = true;
  int64_t timeout_ms = 0;  // 0: only the command's deadline
  std::shared_ptr<ssl::context> ssl_ctx;
};

// Why a conversation stopped: `permanent` for a 5xx reply or a refusal that cannot change.
struct failed {
  bool permanent = false;
  std::string why;
  bool connection_ok = false;  // the server answered: a polite QUIT is still possible
};
template <typename T>
using step = std::expected<T, failed>;

step<void> ok() { return {}; }
std::unexpected<failed> stop(bool permanent, std::string why, bool connection_ok = false) {
  return std::unexpected(failed{permanent, std::move(why), connection_ok});
}

// ------------------------------------------------------------------------------ encodings

std::string base64(std::string_view in) {
  static constexpr char table[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t v = static_cast<uint8_t>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<uint8_t>(in[i + 1]) << 8;
    if (i + 2 < in.size()) v |= static_cast<uint8_t>(in[i + 2]);
    out += table[(v >> 18) & 63];
    out += table[(v >> 12) & 63];
    out += i + 1 < in.size() ? table[(v >> 6) & 63] : '=';
    out += i + 2 < in.size() ? table[v & 63] : '=';
  }
  return out;
}

bool is_ascii_text(std::string_view s) {
  return std::ranges::all_of(s, [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return (u >= 0x20 && u < 0x7f) || u == '\t';
  });
}

// RFC 2047 "B" encoded words of at most 75 characters, split between UTF-8 characters and
// folded onto continuation lines (decoders drop the whitespace between encoded words).
std::string encode_header_value(std::string_view v) {
  if (is_ascii_text(v)) return std::string(v);
  constexpr size_t raw_bytes_per_word = 45;  // 60 base64 characters + 12 of "=?UTF-8?B??="
  std::string out;
  size_t at = 0;
  while (at < v.size()) {
    size_t end = std::min(v.size(), at + raw_bytes_per_word);
    while (end < v.size() && end > at + 1 && (static_cast<uint8_t>(v[end]) & 0xC0) == 0x80) --end;
    if (!out.empty()) out += "\r\n ";
    out += "=?UTF-8?B?" + base64(v.substr(at, end - at)) + "?=";
    at = end;
  }
  return out;
}

// Lines of the body, whatever their endings were (CRLF, LF or CR).
std::vector<std::string_view> split_lines(std::string_view body) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] == '\r' || body[i] == '\n') {
      lines.push_back(body.substr(start, i - start));
      if (body[i] == '\r' && i + 1 < body.size() && body[i + 1] == '\n') ++i;
      start = i + 1;
    }
  }
  if (start < body.size()) lines.push_back(body.substr(start));
  return lines;
}

// Quoted-printable (RFC 2045 6.7) of one line, with soft breaks to keep lines at 76.
void quoted_printable_line(std::string_view line, std::vector<std::string>& out) {
  static constexpr char hexd[] = "0123456789ABCDEF";
  std::string cur;
  for (size_t i = 0; i < line.size(); ++i) {
    const auto u = static_cast<uint8_t>(line[i]);
    const bool last = i + 1 == line.size();
    std::string piece;
    if ((u >= 33 && u <= 126 && u != '=') || ((u == ' ' || u == '\t') && !last)) {
      piece = static_cast<char>(u);
    } else {
      piece = {'=', hexd[u >> 4], hexd[u & 15]};
    }
    if (cur.size() + piece.size() > 75) {
      out.push_back(cur + "=");
      cur.clear();
    }
    cur += piece;
  }
  out.push_back(cur);
}

struct encoded_body {
  const char* transfer_encoding;
  std::vector<std::string> lines;
};

encoded_body encode_body(std::string_view body) {
  const auto lines = split_lines(body);
  const bool plain = std::ranges::all_of(
      lines, [](std::string_view l) { return l.size() <= 998 && is_ascii_text(l); });
  encoded_body e{plain ? "7bit" : "quoted-printable", {}};
  for (std::string_view l : lines) {
    if (plain) {
      e.lines.emplace_back(l);
    } else {
      quoted_printable_line(l, e.lines);
    }
  }
  return e;
}

std::string rfc5322_date(int64_t ms) {
  static constexpr const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{}, {:02} {} {} {:02}:{:02}:{:02} +0000", days[tm.tm_wday], tm.tm_mday,
                     months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

// "<exec/step/attempt>" -> "<exec.step.attempt@auterity>": '/' becomes '.', anything outside
// [A-Za-z0-9_-] becomes "=XX", so the id is a valid dot-atom and still names the command.
std::string message_id(std::string_view key) {
  static constexpr char hexd[] = "0123456789ABCDEF";
  std::string id = "<";
  for (char c : key) {
    const auto u = static_cast<uint8_t>(c);
    if (std::isalnum(u) || c == '_' || c == '-') {
      id += c;
    } else if (c == '/') {
      id += '.';
    } else {
      id += {'=', hexd[u >> 4], hexd[u & 15]};
    }
  }
  return id + "@auterity>";
}

// One plain mailbox: local@domain, printable ASCII, no spaces, brackets, quotes or separators.
std::optional<std::string> address_problem(std::string_view a) {
  if (a.empty()) return "is empty";
  if (a.find_first_of("\r\n") != std::string_view::npos) {
    return "contains CR/LF (header injection refused)";
  }
  if (a.size() > smtp_address_bytes_max) {
    return fmt::format("is longer than smtp_address_bytes_max ({})", smtp_address_bytes_max);
  }
  for (char c : a) {
    const auto u = static_cast<uint8_t>(c);
    if (u <= 0x20 || u >= 0x7f || std::string_view("<>()[],;:\\\"").find(c) != std::string::npos) {
      return "is not a plain address (one local@domain, no spaces, names or separators)";
    }
  }
  const size_t at = a.find('@');
  if (at == std::string_view::npos || at == 0 || at + 1 == a.size() ||
      a.find('@', at + 1) != std::string_view::npos) {
    return "is not an address: it needs exactly one @ between a local part and a domain";
  }
  return std::nullopt;
}

// ------------------------------------------------------------------------------ the session

struct reply {
  int code = 0;
  std::vector<std::string> lines;  // text after "NNN-" / "NNN "
  std::string summary() const {
    std::string s = std::to_string(code);
    for (const auto& l : lines) s += (&l == &lines.front() ? " " : " | ") + l;
    if (s.size() > smtp_reason_reply_bytes_max)
      s = s.substr(0, smtp_reason_reply_bytes_max) + "...";
    return s;
  }
};

// One SMTP conversation on a private io_context: every operation is started asynchronously and
// the context runs until it completes or the deadline passes (then the socket is closed).
class smtp_session {
 public:
  smtp_session(const smtp_config& c, steady::time_point deadline)
      : _c(c), _deadline(deadline), _resolver(_io), _stream(_io, *c.ssl_ctx) {}

  step<void> connect() {
    tcp::resolver::results_type endpoints;
    auto r = run(
        [&](auto done) {
          _resolver.async_resolve(
              _c.host, _c.port,
              [&, done](boost::system::error_code ec, tcp::resolver::results_type res) {
                endpoints = std::move(res);
                done(ec);
              });
        },
        "resolving " + _c.host);
    if (!r) return r;
    r = run(
        [&](auto done) {
          asio::async_connect(
              _stream.next_layer(), endpoints,
              [done](boost::system::error_code ec, const tcp::endpoint&) { done(ec); });
        },
        fmt::format("connecting to {}:{}", _c.host, _c.port));
    if (!r) return r;
    if (_c.tls) return handshake();
    return ok();
  }

  step<reply> read_reply(std::string_view what) {
    reply rep;
    while (true) {
      size_t n = 0;
      auto r = run(
          [&](auto done) {
            auto read = [&](auto& s) {
              asio::async_read_until(s, asio::dynamic_buffer(_buf, smtp_reply_line_bytes_max), "\n",
                                     [&n, done](boost::system::error_code ec, size_t got) {
                                       n = got;
                                       done(ec);
                                     });
            };
            if (_tls_on) {
              read(_stream);
            } else {
              read(_stream.next_layer());
            }
          },
          fmt::format("reading the reply to {}", what));
      if (!r) return std::unexpected(r.error());
      std::string line = _buf.substr(0, n);
      _buf.erase(0, n);
      while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
      const bool digits = line.size() >= 3 && std::isdigit(static_cast<uint8_t>(line[0])) &&
                          std::isdigit(static_cast<uint8_t>(line[1])) &&
                          std::isdigit(static_cast<uint8_t>(line[2]));
      const char sep = line.size() > 3 ? line[3] : ' ';
      if (!digits || (sep != ' ' && sep != '-')) {
        return stop(false, fmt::format("smtp {}: not an SMTP reply: {}", what, line.substr(0, 80)));
      }
      const int code = std::stoi(line.substr(0, 3));
      if (!rep.lines.empty() && code != rep.code) {
        return stop(false, fmt::format("smtp {}: reply codes change inside one reply", what));
      }
      rep.code = code;
      rep.lines.push_back(line.size() > 4 ? line.substr(4) : "");
      if (sep == ' ') return rep;
      if (rep.lines.size() >= smtp_reply_lines_max) {
        return stop(false, fmt::format("smtp {}: reply longer than smtp_reply_lines_max ({})", what,
                                       smtp_reply_lines_max));
      }
    }
  }

  step<void> write(std::string data, std::string_view what) {
    return run(
        [&](auto done) {
          auto send = [&](auto& s) {
            asio::async_write(s, asio::buffer(data),
                              [done](boost::system::error_code ec, size_t) { done(ec); });
          };
          if (_tls_on) {
            send(_stream);
          } else {
            send(_stream.next_layer());
          }
        },
        fmt::format("sending {}", what));
  }

  // Sends `line` (never put in a reason: AUTH lines hold credentials) and reads the reply,
  // which must be `expect`xx; 4xx is retryable, 5xx permanent.
  step<reply> command(std::string line, std::string_view what, int expect = 2) {
    if (auto w = write(std::move(line) + "\r\n", what); !w) return std::unexpected(w.error());
    return expect_reply(what, expect);
  }

  step<reply> expect_reply(std::string_view what, int expect = 2) {
    auto rep = read_reply(what);
    if (!rep) return rep;
    const int cls = rep->code / 100;
    if (cls == expect) return rep;
    const std::string why = fmt::format("smtp {}: {}", what, rep->summary());
    if (cls == 4) return stop(false, why, true);
    if (cls == 5) return stop(true, why, true);
    return stop(false, "unexpected reply: " + why, true);
  }

  step<void> starttls() {
    auto rep = command("STARTTLS", "STARTTLS");
    if (!rep) return std::unexpected(rep.error());
    // Anything the server sent after its 220 arrived before the handshake, unprotected:
    // refusing it closes the STARTTLS command-injection hole.
    if (!_buf.empty()) return stop(false, "smtp STARTTLS: data after the 220 reply, refused");
    return handshake();
  }

  bool tls_on() const { return _tls_on; }

  // Best effort, within what is left of the deadline.
  void quit() {
    if (write("QUIT\r\n", "QUIT")) (void)read_reply("QUIT");
  }

 private:
  step<void> handshake() {
    if (_c.verify) {
      _stream.set_verify_mode(ssl::verify_peer);
      _stream.set_verify_callback(ssl::host_name_verification(_c.host));
    } else {
      _stream.set_verify_mode(ssl::verify_none);
    }
    boost::system::error_code ec;
    asio::ip::make_address(_c.host, ec);
    if (ec) SSL_set_tlsext_host_name(_stream.native_handle(), _c.host.c_str());  // SNI: names only
    auto r = run(
        [&](auto done) {
          _stream.async_handshake(ssl::stream_base::client,
                                  [done](boost::system::error_code e) { done(e); });
        },
        "the TLS handshake");
    if (r) _tls_on = true;
    return r;
  }

  template <typename Start>
  step<void> run(Start&& start, std::string what) {
    bool done = false;
    boost::system::error_code result;
    start([&done, &result](boost::system::error_code ec) {
      result = ec;
      done = true;
    });
    _io.restart();
    _io.run_until(_deadline);
    if (!done) {
      boost::system::error_code ignored;
      _resolver.cancel();
      _stream.next_layer().close(ignored);
      _io.restart();
      _io.run();  // the cancelled operation completes; nothing refers to this frame after
      return stop(false, fmt::format("deadline exceeded while {} ({}:{})", what, _c.host, _c.port));
    }
    if (result) {
      if (result == asio::error::not_found) {
        return stop(false, fmt::format("smtp: a reply line is longer than "
                                       "smtp_reply_line_bytes_max ({}) while {}",
                                       smtp_reply_line_bytes_max, what));
      }
      return stop(false, fmt::format("smtp: {} failed ({}:{}): {}", what, _c.host, _c.port,
                                     result.message()));
    }
    return ok();
  }

  const smtp_config& _c;
  steady::time_point _deadline;
  asio::io_context _io;
  tcp::resolver _resolver;
  ssl::stream<tcp::socket> _stream;
  std::string _buf;
  bool _tls_on = false;
};

// ------------------------------------------------------------------------------ the connector

struct extensions {
  bool starttls = false;
  bool auth_plain = false;
  bool auth_login = false;
  bool auth_any = false;
};

extensions parse_ehlo(const reply& r) {
  extensions e;
  for (size_t i = 1; i < r.lines.size(); ++i) {
    std::string l = r.lines[i];
    std::ranges::transform(l, l.begin(),
                           [](char c) { return std::toupper(static_cast<uint8_t>(c)); });
    if (l == "STARTTLS") e.starttls = true;
    if (l.starts_with("AUTH ") || l.starts_with("AUTH=")) {
      e.auth_any = true;
      const std::string mechs = " " + l.substr(5) + " ";
      e.auth_plain |= mechs.find(" PLAIN ") != std::string::npos;
      e.auth_login |= mechs.find(" LOGIN ") != std::string::npos;
    }
  }
  return e;
}

class smtp_connector final : public connector {
 public:
  explicit smtp_connector(smtp_config c) : _c(std::move(c)) {}

  ack_result execute(const fbs::Envelope& command, const command_context& ctx) override {
    const fbs::SendNotification* cmd = command.payload_as_SendNotification();
    if (!cmd) return result_of(stop(true, "email: the command is not a SendNotification"));
    const std::string_view to = sv(cmd->to());
    const std::string_view subject = sv(cmd->subject());
    const std::string_view body = sv(cmd->body());
    if (auto p = address_problem(to)) return result_of(stop(true, "email: `to` " + *p));
    if (subject.find_first_of("\r\n") != std::string_view::npos) {
      return result_of(stop(true, "email: the subject contains CR/LF (header injection refused)"));
    }
    if (std::ranges::any_of(subject, [](char c) {
          const auto u = static_cast<uint8_t>(c);
          return (u < 0x20 && u != '\t') || u == 0x7f;
        })) {
      return result_of(stop(true, "email: the subject contains control characters"));
    }
    if (subject.size() > smtp_subject_bytes_max) {
      return result_of(stop(true, fmt::format("email: the subject is {} bytes, over "
                                              "smtp_subject_bytes_max ({})",
                                              subject.size(), smtp_subject_bytes_max)));
    }
    if (body.size() > smtp_body_bytes_max) {
      return result_of(stop(true, fmt::format("email: the body is {} bytes, over "
                                              "smtp_body_bytes_max ({})",
                                              body.size(), smtp_body_bytes_max)));
    }
    const std::string_view key =
        ctx.idempotency_key.empty() ? sv(cmd->idempotency_id()) : ctx.idempotency_key;
    const std::string id = message_id(key);

    const int64_t start = wall_now_ms();
    const int64_t deadline = call_deadline_ms(ctx, start, _c.timeout_ms);
    if (deadline <= start) return result_of(stop(false, "deadline exceeded before connecting"));

    smtp_session s(_c, steady::now() + std::chrono::milliseconds(deadline - start));
    auto accepted = converse(s, to, message(to, subject, body, id, start));
    if (!accepted) {
      if (accepted.error().connection_ok) s.quit();
      return result_of(std::unexpected(accepted.error()));
    }
    return ack_success(json{{"channel", "email"}, {"message_id", id}, {"accepted", *accepted}}.dump(
        -1, ' ', false, json::error_handler_t::replace));
  }

 private:
  static ack_result result_of(std::unexpected<failed> f) {
    return f.error().permanent ? ack_permanent(std::move(f.error().why))
                               : ack_retryable(std::move(f.error().why));
  }

  // The DATA payload, dot-stuffed, CRLF line endings, with the terminating ".".
  std::string message(std::string_view to, std::string_view subject, std::string_view body,
                      const std::string& id, int64_t now) const {
    const encoded_body b = encode_body(body);
    std::string m;
    m += "Date: " + rfc5322_date(now) + "\r\n";
    m += "From: " + _c.from + "\r\n";
    m += "To: " + std::string(to) + "\r\n";
    m += "Subject: " + encode_header_value(subject) + "\r\n";
    m += "Message-ID: " + id + "\r\n";
    m += "MIME-Version: 1.0\r\n";
    m += "Content-Type: text/plain; charset=utf-8\r\n";
    m += fmt::format("Content-Transfer-Encoding: {}\r\n", b.transfer_encoding);
    m += "\r\n";
    for (const std::string& l : b.lines) {
      if (l.starts_with('.')) m += '.';
      m += l + "\r\n";
    }
    m += ".\r\n";
    return m;
  }

  // The whole conversation; returns the server's reply text to the end of DATA.
  step<std::string> converse(smtp_session& s, std::string_view to, std::string data) const {
    if (auto r = s.connect(); !r) return std::unexpected(r.error());
    if (auto r = s.expect_reply("greeting"); !r) return std::unexpected(r.error());
    auto ext = hello(s);
    if (!ext) return std::unexpected(ext.error());
    if (_c.starttls) {
      if (!ext->starttls) {
        return stop(true,
                    fmt::format("smtp: {} does not offer STARTTLS, which the "
                                "configuration requires; not sending in clear text",
                                _c.host),
                    true);
      }
      if (auto r = s.starttls(); !r) return std::unexpected(r.error());
      ext = hello(s);
      if (!ext) return std::unexpected(ext.error());
    }
    if (!_c.username.empty()) {
      if (auto r = authenticate(s, *ext); !r) return std::unexpected(r.error());
    }
    if (auto r = s.command("MAIL FROM:<" + _c.from + ">", "MAIL FROM"); !r) {
      return std::unexpected(r.error());
    }
    if (auto r =
            s.command("RCPT TO:<" + std::string(to) + ">", "RCPT TO <" + std::string(to) + ">");
        !r) {
      return std::unexpected(r.error());
    }
    if (auto r = s.command("DATA", "DATA", 3); !r) return std::unexpected(r.error());
    if (auto w = s.write(std::move(data), "the message"); !w) return std::unexpected(w.error());
    auto done = s.expect_reply("the end of DATA");
    if (!done) return std::unexpected(done.error());
    std::string text;
    for (const auto& l : done->lines) text += (text.empty() ? "" : " ") + l;
    s.quit();
    return text;
  }

  step<extensions> hello(smtp_session& s) const {
    auto ehlo = s.command("EHLO " + _c.helo_name, "EHLO");
    if (ehlo) return parse_ehlo(*ehlo);
    if (!ehlo.error().permanent) return std::unexpected(ehlo.error());
    // An old server that does not know EHLO: plain HELO, no extensions.
    auto helo = s.command("HELO " + _c.helo_name, "HELO");
    if (!helo) return std::unexpected(helo.error());
    return extensions{};
  }

  step<void> authenticate(smtp_session& s, const extensions& ext) const {
    if (!s.tls_on() && !_c.allow_plain_auth) {
      return stop(true, "smtp: refusing to send credentials without TLS", true);
    }
    if (!ext.auth_any) {
      return stop(true,
                  fmt::format("smtp: {} offers no AUTH, but a username is configured", _c.host),
                  true);
    }
    if (ext.auth_plain) {
      const std::string token = base64(std::string(1, '\0') + _c.username + '\0' + _c.password);
      auto r = s.command("AUTH PLAIN " + token, "AUTH PLAIN");
      if (!r) return std::unexpected(r.error());
      return ok();
    }
    if (ext.auth_login) {
      if (auto r = s.command("AUTH LOGIN", "AUTH LOGIN", 3); !r) return std::unexpected(r.error());
      if (auto r = s.command(base64(_c.username), "AUTH LOGIN (username)", 3); !r) {
        return std::unexpected(r.error());
      }
      if (auto r = s.command(base64(_c.password), "AUTH LOGIN (password)"); !r) {
        return std::unexpected(r.error());
      }
      return ok();
    }
    return stop(true, fmt::format("smtp: {} offers neither AUTH PLAIN nor AUTH LOGIN", _c.host),
                true);
  }

  const smtp_config _c;
};

// ------------------------------------------------------------------------------ configuration

result<smtp_config> parse_config(const json& section, const http_tls_options& tls) {
  if (!section.is_object()) return fail(errc::invalid, "must be an object");
  static constexpr std::string_view keys[] = {"api",        "host",     "port",
                                              "from",       "username", "password",
                                              "starttls",   "tls",      "allow_plain_auth",
                                              "timeout_ms", "helo_name"};
  for (const auto& [k, v] : section.items()) {
    if (std::ranges::find(keys, k) == std::end(keys)) {
      return fail(errc::invalid, fmt::format("unknown key '{}'", k));
    }
  }
  auto str = [&](const char* key, bool required) -> result<std::string> {
    if (!section.contains(key)) {
      if (required) return fail(errc::invalid, fmt::format("{}: required", key));
      return std::string();
    }
    const json& v = section[key];
    if (!v.is_string() || v.get<std::string>().empty()) {
      return fail(errc::invalid, fmt::format("{}: must be a non-empty string", key));
    }
    return v.get<std::string>();
  };
  auto flag = [&](const char* key, bool& out) -> result<void> {
    if (!section.contains(key)) return {};
    if (!section[key].is_boolean())
      return fail(errc::invalid, fmt::format("{}: must be true or false", key));
    out = section[key].get<bool>();
    return {};
  };
  smtp_config c;
  c.verify = tls.verify;
  if (section.contains("api") && section["api"] != "smtp") {
    return fail(errc::invalid, "api: must be \"smtp\"");
  }
  auto host = str("host", true);
  if (!host) return std::unexpected(host.error());
  c.host = *host;
  if (c.host.find_first_of(" \r\n/") != std::string::npos) {
    return fail(errc::invalid, "host: must be a host name or address");
  }
  auto from = str("from", true);
  if (!from) return std::unexpected(from.error());
  if (auto p = address_problem(*from)) return fail(errc::invalid, "from: " + *p);
  c.from = *from;
  for (auto [key, out] : {std::pair{"starttls", &c.starttls}, std::pair{"tls", &c.tls},
                          std::pair{"allow_plain_auth", &c.allow_plain_auth}}) {
    if (auto r = flag(key, *out); !r) return std::unexpected(r.error());
  }
  if (c.starttls && c.tls) {
    return fail(errc::invalid, "starttls and tls: choose one (tls is SMTPS, port 465)");
  }
  int port = c.tls ? 465 : c.starttls ? 587 : 25;
  if (section.contains("port")) {
    const json& p = section["port"];
    if (!p.is_number_integer() || p.get<int64_t>() < 1 || p.get<int64_t>() > 65535) {
      return fail(errc::invalid, "port: must be an integer from 1 to 65535");
    }
    port = p.get<int>();
  }
  c.port = std::to_string(port);
  if (section.contains("timeout_ms")) {
    const json& t = section["timeout_ms"];
    if (!t.is_number_integer() || t.get<int64_t>() <= 0 || t.get<int64_t>() > 3'600'000) {
      return fail(errc::invalid, "timeout_ms: must be an integer from 1 to 3600000");
    }
    c.timeout_ms = t.get<int64_t>();
  }
  auto helo = str("helo_name", false);
  if (!helo) return std::unexpected(helo.error());
  if (!helo->empty()) {
    if (!std::ranges::all_of(*helo, [](char ch) {
          return std::isalnum(static_cast<uint8_t>(ch)) || ch == '.' || ch == '-' || ch == '[' ||
                 ch == ']' || ch == ':';
        })) {
      return fail(errc::invalid, "helo_name: must be a domain name or an address literal");
    }
    c.helo_name = *helo;
  }
  auto user = str("username", false);
  if (!user) return std::unexpected(user.error());
  c.username = *user;
  if (section.contains("password") != !c.username.empty()) {
    return fail(errc::invalid, "username and password: give both or neither");
  }
  if (!c.username.empty()) {
    if (!c.tls && !c.starttls && !c.allow_plain_auth) {
      return fail(errc::invalid,
                  "username: AUTH needs \"starttls\" or \"tls\" (credentials are "
                  "not sent in clear text; \"allow_plain_auth\" is for loopback "
                  "tests)");
    }
    if (!section["password"].is_string()) {
      return fail(errc::invalid,
                  "password: must be a secret reference, \"env:NAME\" or "
                  "\"file:/path\"");
    }
    auto pw = resolve_secret(section["password"].get<std::string>());
    if (!pw) return fail(pw.error().code, "password: " + pw.error().message);
    c.password = std::move(*pw);
  }
  c.ssl_ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  if (c.tls || c.starttls) {
    boost::system::error_code ec;
    if (!tls.ca_file.empty()) {
      c.ssl_ctx->load_verify_file(tls.ca_file, ec);
      if (ec) {
        return fail(errc::invalid,
                    fmt::format("tls.ca_file {}: cannot load: {}", tls.ca_file, ec.message()));
      }
    } else {
      c.ssl_ctx->set_default_verify_paths(ec);
      if (ec) return fail(errc::invalid, "cannot load the system's CA certificates");
    }
  }
  return c;
}

}  // namespace

result<std::unique_ptr<connector>> make_smtp_connector(const json& section,
                                                       const http_tls_options& tls) {
  auto c = parse_config(section, tls);
  if (!c) return std::unexpected(c.error());
  return std::make_unique<smtp_connector>(std::move(*c));
}

}  // namespace auterity
