#include "engine/http_client.h"

// Boost stays in this file: the header is plain C++ so connectors compile without it.
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include <fmt/core.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/http.hpp>

#include "engine/clock.h"

namespace auterity {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using boost::system::error_code;

// Response header block (status line and fields); Beast's default is 8 KiB, which some APIs
// exceed with long cookies and tracing headers.
constexpr uint32_t http_response_header_bytes_max = 64 << 10;
// Used when the request names no deadline.
constexpr int64_t http_default_timeout_ms = 30'000;

bool has_line_break(std::string_view s) {
  return s.find_first_of("\r\n") != std::string_view::npos || s.find('\0') != s.npos;
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  return std::ranges::all_of(s, [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  });
}

// What the exchange was doing, for the error message.
enum class phase { resolve, connect, handshake, write, read };

const char* phase_name(phase p) {
  switch (p) {
    case phase::resolve:
      return "resolving the host";
    case phase::connect:
      return "connecting";
    case phase::handshake:
      return "doing the TLS handshake";
    case phase::write:
      return "sending the request";
    case phase::read:
      return "reading the response";
  }
  return "?";
}

// One call's state, shared by the exchange coroutine and the deadline timer; everything runs
// on the call's private io_context, on the calling thread.
struct call {
  asio::io_context ioc;
  tcp::resolver resolver{ioc};
  url_parts url;
  std::string origin;  // scheme://host:port — what messages name (paths may hold secrets)
  bhttp::request<bhttp::string_body> request;
  phase at = phase::resolve;
  bool timed_out = false;
  tcp::socket* socket = nullptr;  // to close when the deadline passes
  SSL* ssl_handle = nullptr;      // for the verification error, if any
  std::optional<result<http_response>> out;

  std::unexpected<error> failed(const error_code& ec) {
    if (timed_out) {
      return fail(errc::timeout,
                  fmt::format("{}: deadline passed while {}", origin, phase_name(at)));
    }
    if (ec == bhttp::error::body_limit) {
      return fail(errc::too_large, fmt::format("{}: response body exceeds {} bytes", origin,
                                               http_response_bytes_max));
    }
    if (ec == bhttp::error::header_limit) {
      return fail(errc::too_large, fmt::format("{}: response header exceeds {} bytes", origin,
                                               http_response_header_bytes_max));
    }
    std::string detail = ec.message();
    if (at == phase::handshake && ssl_handle) {
      const long verify = SSL_get_verify_result(ssl_handle);
      if (verify != X509_V_OK) {
        detail = fmt::format("certificate verification failed: {}",
                             X509_verify_cert_error_string(verify));
      }
    }
    return fail(errc::io, fmt::format("{}: failed while {}: {}", origin, phase_name(at), detail));
  }
};

error_code read_until_done(const error_code& ec, bhttp::response_parser<bhttp::string_body>& p) {
  // A TLS peer that closes without close_notify truncates the stream; for a body delimited by
  // the end of the connection that is the end of the body.
  if (ec == ssl::error::stream_truncated && p.need_eof()) {
    error_code eof_ec;
    p.put_eof(eof_ec);
    return eof_ec;
  }
  return ec;
}

template <typename Stream>
asio::awaitable<void> exchange(call& c, Stream& stream, bool tls) {
  error_code ec;
  auto token = asio::redirect_error(asio::use_awaitable, ec);

  c.at = phase::resolve;
  auto endpoints = co_await c.resolver.async_resolve(c.url.host, c.url.port, token);
  if (ec || c.timed_out) {
    c.out = c.failed(ec);
    co_return;
  }

  // Endpoints one by one (not asio::async_connect), so a deadline that closed the socket ends
  // the attempt instead of moving on to the next address.
  c.at = phase::connect;
  tcp::socket& socket = beast::get_lowest_layer(stream);
  for (const auto& entry : endpoints) {
    if (socket.is_open()) socket.close(ec);
    co_await socket.async_connect(entry.endpoint(), token);
    if (!ec || c.timed_out) break;
  }
  if (ec || c.timed_out) {
    c.out = c.failed(ec);
    co_return;
  }

  if constexpr (!std::is_same_v<Stream, tcp::socket>) {
    if (tls) {
      c.at = phase::handshake;
      co_await stream.async_handshake(ssl::stream_base::client, token);
      if (ec || c.timed_out) {
        c.out = c.failed(ec);
        co_return;
      }
    }
  }

  c.at = phase::write;
  co_await bhttp::async_write(stream, c.request, token);
  if (ec || c.timed_out) {
    c.out = c.failed(ec);
    co_return;
  }

  c.at = phase::read;
  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(http_response_bytes_max);
  parser.header_limit(http_response_header_bytes_max);
  co_await bhttp::async_read(stream, buffer, parser, token);
  ec = read_until_done(ec, parser);
  if (ec || c.timed_out) {
    c.out = c.failed(ec);
    co_return;
  }

  auto message = parser.release();
  http_response response;
  response.status = static_cast<int>(message.result_int());
  for (const auto& field : message) {
    response.headers.emplace_back(ascii_lower(field.name_string()), std::string(field.value()));
  }
  response.body = std::move(message.body());
  c.out = std::move(response);
}

// Builds the request; errc::invalid for what no server should receive.
result<bhttp::request<bhttp::string_body>> build_request(const http_request& r,
                                                         const url_parts& url) {
  static constexpr std::string_view methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
  if (std::ranges::find(methods, r.method) == std::end(methods)) {
    return fail(errc::invalid,
                fmt::format("unsupported HTTP method \"{}\" (GET, POST, PUT, PATCH or DELETE)",
                            r.method.size() > 16 ? r.method.substr(0, 16) + "..." : r.method));
  }
  if (r.body.size() > http_request_bytes_max) {
    return fail(errc::too_large, fmt::format("request body of {} bytes exceeds {} bytes",
                                             r.body.size(), http_request_bytes_max));
  }
  bhttp::request<bhttp::string_body> req{bhttp::string_to_verb(r.method), url.target, 11};
  const bool default_port = url.port == (url.tls ? "443" : "80");
  const bool ipv6 = url.host.find(':') != std::string::npos;
  std::string host = ipv6 ? "[" + url.host + "]" : url.host;
  if (!default_port) host += ":" + url.port;
  req.set(bhttp::field::host, host);
  bool user_agent = false;
  for (const auto& [name, value] : r.headers) {
    if (!is_token(name)) {
      return fail(errc::invalid, fmt::format("invalid HTTP header name \"{}\"",
                                             name.size() > 64 ? name.substr(0, 64) : name));
    }
    if (has_line_break(value)) {  // the value itself stays out: it may be a secret
      return fail(errc::invalid, fmt::format("HTTP header {} has a line break in its value", name));
    }
    const std::string l = ascii_lower(name);
    if (l == "host" || l == "content-length" || l == "transfer-encoding" || l == "connection") {
      return fail(errc::invalid, fmt::format("HTTP header {} is set by the client", name));
    }
    if (l == "user-agent") user_agent = true;
    req.insert(name, value);
  }
  if (!user_agent) req.set(bhttp::field::user_agent, "auterity");
  req.set(bhttp::field::connection, "close");
  req.body() = r.body;
  req.prepare_payload();
  if (r.method != "GET" && r.method != "DELETE" && r.body.empty()) {
    req.set(bhttp::field::content_length, "0");
  }
  return req;
}

// A TLS context: the system's CA paths or the configured bundle, peer verification.
result<std::unique_ptr<ssl::context>> make_tls_context(const http_tls_options& tls) {
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
  error_code ec;
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                   ec);
  if (!tls.verify) {
    ctx->set_verify_mode(ssl::verify_none, ec);
    return ctx;
  }
  ctx->set_verify_mode(ssl::verify_peer, ec);
  if (!tls.ca_file.empty()) {
    ctx->load_verify_file(tls.ca_file, ec);
    if (ec) {
      return fail(errc::invalid,
                  fmt::format("TLS CA file {} cannot be loaded: {}", tls.ca_file, ec.message()));
    }
  } else {
    ctx->set_default_verify_paths(ec);
    if (ec) {
      return fail(errc::io, fmt::format("the system's TLS CA certificates cannot be loaded: {}",
                                        ec.message()));
    }
  }
  return ctx;
}

// The TLS context for `tls`, built once per (CA file, verify) and shared by every later call:
// loading the system's CA bundle parses a few hundred certificates, work a call must not
// repeat. A context that failed to build is not kept, so the next call reports it again.
// OpenSSL contexts are safe to share between threads once configured.
result<std::shared_ptr<ssl::context>> shared_tls_context(const http_tls_options& tls) {
  static std::mutex mu;
  static std::map<std::pair<std::string, bool>, std::shared_ptr<ssl::context>> contexts;
  std::lock_guard lock(mu);
  auto key = std::make_pair(tls.ca_file, tls.verify);
  if (auto it = contexts.find(key); it != contexts.end()) return it->second;
  auto ctx = make_tls_context(tls);
  if (!ctx) return std::unexpected(ctx.error());
  std::shared_ptr<ssl::context> shared = std::move(*ctx);
  contexts.emplace(std::move(key), shared);
  return shared;
}

}  // namespace

std::string http_response::header(std::string_view name) const {
  const std::string l = ascii_lower(name);
  for (const auto& [n, v] : headers) {
    if (n == l) return v;
  }
  return "";
}

result<url_parts> parse_url(std::string_view url) {
  url_parts out;
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) {
    return fail(errc::invalid, "URL must start with http:// or https://");
  }
  const std::string scheme = ascii_lower(url.substr(0, scheme_end));
  if (scheme == "https") {
    out.tls = true;
  } else if (scheme != "http") {
    return fail(errc::invalid, fmt::format("URL scheme \"{}\" is not supported (http or https)",
                                           scheme.size() > 16 ? scheme.substr(0, 16) : scheme));
  }
  if (std::ranges::any_of(url, [](char c) {
        return static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) == 0x7f;
      })) {
    return fail(errc::invalid, "URL contains a space or control character");
  }
  std::string_view rest = url.substr(scheme_end + 3);
  const size_t authority_end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, authority_end);
  std::string_view target =
      authority_end == std::string_view::npos ? "" : rest.substr(authority_end);
  if (authority.find('@') != std::string_view::npos) {
    // Credentials in URLs end up in logs; connectors send them as headers instead.
    return fail(errc::invalid, "URL must not contain user information (user@host)");
  }
  std::string_view port;
  if (authority.starts_with('[')) {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return fail(errc::invalid, "URL has an unclosed [");
    out.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (!after.starts_with(':')) return fail(errc::invalid, "URL has text after ]");
      port = after.substr(1);
      if (port.empty()) return fail(errc::invalid, "URL has an empty port");
    }
  } else {
    const size_t colon = authority.find(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      if (port.empty()) return fail(errc::invalid, "URL has an empty port");
    }
  }
  if (out.host.empty()) return fail(errc::invalid, "URL has no host");
  if (!port.empty()) {
    int n = 0;
    for (char c : port) {
      if (!std::isdigit(static_cast<unsigned char>(c)) || n > 65535) {
        return fail(errc::invalid, "URL port must be a number from 1 to 65535");
      }
      n = n * 10 + (c - '0');
    }
    if (n < 1 || n > 65535) return fail(errc::invalid, "URL port must be a number from 1 to 65535");
    out.port = std::to_string(n);
  } else {
    out.port = out.tls ? "443" : "80";
  }
  const size_t fragment = target.find('#');
  if (fragment != std::string_view::npos) target = target.substr(0, fragment);
  if (target.empty() || target.starts_with('?')) {
    out.target = "/" + std::string(target);
  } else {
    out.target = std::string(target);
  }
  return out;
}

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

result<http_response> http_call(const http_request& request, const http_tls_options& tls) {
  auto url = parse_url(request.url);
  if (!url) return std::unexpected(url.error());
  const int64_t now = wall_now_ms();
  const int64_t deadline =
      request.deadline_ms == 0 ? now + http_default_timeout_ms : request.deadline_ms;
  auto c = std::make_unique<call>();
  c->url = *url;
  const bool ipv6 = url->host.find(':') != std::string::npos;
  c->origin = fmt::format("{}://{}:{}", url->tls ? "https" : "http",
                          ipv6 ? "[" + url->host + "]" : url->host, url->port);
  if (deadline <= now) {
    return fail(errc::timeout, fmt::format("{}: deadline passed before the request", c->origin));
  }
  auto built = build_request(request, *url);
  if (!built) return std::unexpected(built.error());
  c->request = std::move(*built);

  try {
    std::shared_ptr<ssl::context> tls_ctx;
    std::optional<ssl::stream<tcp::socket>> tls_stream;
    std::optional<tcp::socket> plain;
    if (url->tls) {
      auto ctx = shared_tls_context(tls);
      if (!ctx) return std::unexpected(ctx.error());
      tls_ctx = std::move(*ctx);
      tls_stream.emplace(c->ioc, *tls_ctx);
      SSL* handle = tls_stream->native_handle();
      c->ssl_handle = handle;
      error_code not_ip;
      asio::ip::make_address(url->host, not_ip);
      const bool is_ip = !not_ip;
      if (!is_ip && !SSL_set_tlsext_host_name(handle, url->host.c_str())) {
        return fail(errc::invalid, fmt::format("{}: host name not usable for TLS", c->origin));
      }
      if (tls.verify) {
        // OpenSSL checks the name during chain verification, so a mismatch is reported by
        // name in the verify result; the Asio callback is the same check, kept as the guard.
        X509_VERIFY_PARAM* param = SSL_get0_param(handle);
        const int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, url->host.c_str())
                             : X509_VERIFY_PARAM_set1_host(param, url->host.c_str(), 0);
        if (ok != 1) {
          return fail(errc::invalid, fmt::format("{}: host name not usable for TLS", c->origin));
        }
        tls_stream->set_verify_callback(ssl::host_name_verification(url->host));
      }
      c->socket = &tls_stream->next_layer();
    } else {
      plain.emplace(c->ioc);
      c->socket = &*plain;
    }

    asio::steady_timer timer(c->ioc, std::chrono::milliseconds(deadline - now));
    call* cp = c.get();
    timer.async_wait([cp](const error_code& ec) {
      if (ec) return;  // cancelled: the exchange finished first
      cp->timed_out = true;
      error_code ignored;
      cp->resolver.cancel();
      cp->socket->close(ignored);
    });
    auto done = [cp, &timer](std::exception_ptr e) {
      timer.cancel();
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          cp->out = fail(errc::io, fmt::format("{}: {}", cp->origin, ex.what()));
        } catch (...) {
          cp->out = fail(errc::io, fmt::format("{}: unknown failure", cp->origin));
        }
      }
    };
    if (tls_stream) {
      asio::co_spawn(c->ioc, exchange(*c, *tls_stream, true), done);
    } else {
      asio::co_spawn(c->ioc, exchange(*c, *plain, false), done);
    }
    c->ioc.run();
  } catch (const std::exception& ex) {
    return fail(errc::io, fmt::format("{}: {}", c->origin, ex.what()));
  }
  if (!c->out) return fail(errc::io, fmt::format("{}: the exchange did not finish", c->origin));
  return std::move(*c->out);
}

}  // namespace auterity
