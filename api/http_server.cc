#include "api/http_server.h"

#include <mutex>
#include <optional>
#include <thread>

#include <fmt/core.h>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "api/limits.h"
#include "engine/http_client.h"

namespace auterity {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

std::string api_request::header(std::string_view lower_name) const {
  for (const auto& [k, v] : headers) {
    if (k == lower_name) return v;
  }
  return {};
}

namespace {

std::string problem_body(int status, std::string_view title, std::string_view detail) {
  // Hand-written: the server answers before any JSON library is involved.
  return fmt::format(R"({{"type":"about:blank","title":"{}","status":{},"detail":"{}"}})", title,
                     status, detail);
}

}  // namespace

struct http_server::impl {
  net::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::optional<net::ssl::context> tls;  // set: every connection speaks TLS
  api_handler handler;
  std::vector<std::thread> threads;
  std::atomic<size_t> connections{0};
  http_server_stats stats;
  uint16_t port = 0;
  std::once_flag stopped;

  void accept();
  void stop() {
    std::call_once(stopped, [&] {
      net::post(ioc, [this] {
        beast::error_code ec;
        acceptor.close(ec);
      });
      ioc.stop();
      for (std::thread& t : threads) t.join();
    });
  }
};

namespace {

// A connection: Stream is beast::tcp_stream, or beast::ssl_stream over one for TLS.
template <class Stream>
class session : public std::enable_shared_from_this<session<Stream>> {
  static constexpr bool tls = !std::is_same_v<Stream, beast::tcp_stream>;

 public:
  template <class... Args>
  session(http_server::impl& srv, tcp::socket&& socket, Args&... args)
      : _stream(std::move(socket), args...), _srv(srv) {}
  ~session() {
    finish_stream();
    _srv.connections--;
  }

  void run() {
    net::dispatch(_stream.get_executor(), [self = this->shared_from_this()] { self->start(); });
  }

 private:
  auto& lowest() { return beast::get_lowest_layer(_stream); }

  void start() {
    if constexpr (tls) {
      // The handshake counts against the same deadline as a request.
      lowest().expires_after(std::chrono::milliseconds(api_limits::request_read_ms_max));
      _stream.async_handshake(net::ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (ec) {
                                  self->_srv.stats.bad_requests++;
                                  return self->close();
                                }
                                self->read();
                              });
    } else {
      read();
    }
  }

  void read() {
    _parser.emplace();
    _parser->header_limit(api_limits::header_bytes_max);
    _parser->body_limit(api_limits::body_bytes_max);
    lowest().expires_after(std::chrono::milliseconds(api_limits::request_read_ms_max));
    http::async_read(
        _stream, _buffer, *_parser,
        [self = this->shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == net::error::eof) return close();
    if (ec == beast::error::timeout) {
      // Beast closed the socket already: nothing can be answered.
      _srv.stats.bad_requests++;
      return;
    }
    if (ec) {
      _srv.stats.bad_requests++;
      if (ec == http::error::body_limit) {
        return fail(
            413, "Content Too Large",
            fmt::format("the body exceeds body_bytes_max ({} bytes)", api_limits::body_bytes_max));
      }
      if (ec == http::error::header_limit) {
        return fail(431, "Request Header Fields Too Large",
                    fmt::format("request line and headers exceed header_bytes_max ({} bytes)",
                                api_limits::header_bytes_max));
      }
      if (ec.category() == http::make_error_code(http::error::bad_target).category()) {
        return fail(400, "Bad Request", "malformed HTTP request");
      }
      return close();  // reset by the peer, ...
    }
    lowest().expires_never();
    auto req = _parser->release();
    _keep_alive = req.keep_alive();
    _version = req.version();
    api_request r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    for (const auto& field : req) {
      r.headers.emplace_back(ascii_lower(field.name_string()), std::string(field.value()));
    }
    r.body = std::move(req.body());
    auto answered = std::make_shared<std::atomic<bool>>(false);
    api_responder respond = [self = this->shared_from_this(), answered](api_response resp) {
      if (answered->exchange(true)) return;
      net::post(self->_stream.get_executor(),
                [self, resp = std::move(resp)]() mutable { self->write(std::move(resp)); });
    };
    try {
      _srv.handler(std::move(r), respond);
    } catch (const std::exception& e) {
      _srv.stats.handler_exceptions++;
      fmt::print(stderr, "auterity: api: handler failed: {}\n", e.what());
      api_response resp;
      resp.status = 500;
      resp.content_type = "application/problem+json";
      resp.body = problem_body(500, "Internal Server Error", "the request failed; see the log");
      respond(std::move(resp));
    }
  }

  void fail(int status, std::string_view title, std::string detail) {
    _keep_alive = false;
    _version = 11;
    api_response resp;
    resp.status = status;
    resp.content_type = "application/problem+json";
    resp.body = problem_body(status, title, detail);
    write(std::move(resp));
  }

  void write(api_response resp) {
    if (resp.next) return start_stream(std::move(resp));
    auto res = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(resp.status), _version);
    res->set(http::field::content_type, resp.content_type);
    for (const auto& [k, v] : resp.headers) res->set(k, v);
    res->body() = std::move(resp.body);
    res->keep_alive(_keep_alive);
    res->prepare_payload();
    lowest().expires_after(std::chrono::milliseconds(api_limits::response_write_ms_max));
    http::async_write(_stream, *res,
                      [self = this->shared_from_this(), res](beast::error_code ec, size_t) {
                        if (ec) return self->close();
                        if (!res->keep_alive()) return self->close();
                        self->read();
                      });
  }

  // Server-sent events: headers by hand (no length: the stream ends when the connection does).
  void start_stream(api_response resp) {
    _next = std::move(resp.next);
    _on_close = std::move(resp.on_close);
    auto text = std::make_shared<std::string>(fmt::format(
        "HTTP/1.1 {} OK\r\nContent-Type: {}\r\nCache-Control: no-cache\r\nConnection: close\r\n",
        resp.status, resp.content_type));
    for (const auto& [k, v] : resp.headers) *text += fmt::format("{}: {}\r\n", k, v);
    *text += "\r\n" + resp.body;
    _last_sent = std::chrono::steady_clock::now();
    send_stream(text, true);
  }

  void send_stream(std::shared_ptr<std::string> text, bool more) {
    lowest().expires_after(std::chrono::milliseconds(api_limits::response_write_ms_max));
    net::async_write(_stream, net::buffer(*text),
                     [self = this->shared_from_this(), text, more](beast::error_code ec, size_t) {
                       if (ec || !more) {
                         self->finish_stream();
                         return self->close();
                       }
                       self->lowest().expires_never();
                       self->poll_later();
                     });
  }

  void poll_later() {
    if (!_timer) _timer.emplace(_stream.get_executor());
    _timer->expires_after(std::chrono::milliseconds(api_limits::event_poll_ms));
    _timer->async_wait([self = this->shared_from_this()](beast::error_code ec) {
      if (ec) return;
      auto text = std::make_shared<std::string>();
      bool more = true;
      try {
        more = self->_next(*text);
      } catch (const std::exception& e) {
        self->_srv.stats.handler_exceptions++;
        fmt::print(stderr, "auterity: api: event stream failed: {}\n", e.what());
        more = false;
      }
      const auto now = std::chrono::steady_clock::now();
      if (text->empty() && more &&
          now - self->_last_sent < std::chrono::milliseconds(api_limits::event_heartbeat_ms)) {
        return self->poll_later();
      }
      if (text->empty()) *text = ":\n\n";  // a comment: keeps proxies and the peer check alive
      self->_last_sent = now;
      self->send_stream(text, more);
    });
  }

  void finish_stream() {
    if (auto f = std::exchange(_on_close, nullptr)) f();
  }

  void close() {
    beast::error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
    lowest().close();
  }

  Stream _stream;
  http_server::impl& _srv;
  beast::flat_buffer _buffer;
  std::optional<http::request_parser<http::string_body>> _parser;
  bool _keep_alive = false;
  unsigned _version = 11;
  std::function<bool(std::string&)> _next;
  std::function<void()> _on_close;
  std::optional<net::steady_timer> _timer;
  std::chrono::steady_clock::time_point _last_sent;
};

}  // namespace

void http_server::impl::accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
    if (!ec) {
      if (connections.load() >= api_limits::connections_max) {
        stats.connections_refused++;
        socket.close(ec);
      } else {
        connections++;
        if (tls) {
          std::make_shared<session<beast::ssl_stream<beast::tcp_stream>>>(*this, std::move(socket),
                                                                          *tls)
              ->run();
        } else {
          std::make_shared<session<beast::tcp_stream>>(*this, std::move(socket))->run();
        }
      }
      return accept();
    }
    // Out of descriptors and the like: try again shortly rather than spin.
    auto timer = std::make_shared<net::steady_timer>(ioc, std::chrono::milliseconds(50));
    timer->async_wait([this, timer](beast::error_code) { accept(); });
  });
}

http_server::http_server(std::unique_ptr<impl> impl) : _impl(std::move(impl)) {}

http_server::~http_server() { stop(); }

void http_server::stop() { _impl->stop(); }

uint16_t http_server::port() const { return _impl->port; }

const http_server_stats& http_server::stats() const { return _impl->stats; }

result<std::unique_ptr<http_server>> http_server::start(const http_server_options& options,
                                                        api_handler handler) {
  const size_t colon = options.address.rfind(':');
  if (colon == std::string::npos) {
    return fail(errc::invalid, fmt::format("--http {}: expected host:port", options.address));
  }
  std::string host = options.address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  unsigned port = 0;
  const std::string port_text = options.address.substr(colon + 1);
  if (port_text.empty() || port_text.size() > 5 ||
      port_text.find_first_not_of("0123456789") != std::string::npos ||
      (port = std::stoul(port_text)) > 65535) {
    return fail(errc::invalid, fmt::format("--http {}: bad port", options.address));
  }
  auto impl = std::make_unique<http_server::impl>();
  impl->handler = std::move(handler);
  if (!options.tls_cert_file.empty() || !options.tls_key_file.empty()) {
    if (options.tls_cert_file.empty() || options.tls_key_file.empty()) {
      return fail(errc::invalid, "TLS needs both a certificate chain and a private key file");
    }
    impl->tls.emplace(net::ssl::context::tls_server);
    impl->tls->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                           net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                           net::ssl::context::no_tlsv1_1);
    beast::error_code tls_ec;
    impl->tls->use_certificate_chain_file(options.tls_cert_file, tls_ec);
    if (tls_ec) {
      return fail(errc::invalid,
                  fmt::format("TLS certificate {}: {}", options.tls_cert_file, tls_ec.message()));
    }
    impl->tls->use_private_key_file(options.tls_key_file, net::ssl::context::pem, tls_ec);
    if (tls_ec) {
      return fail(errc::invalid,
                  fmt::format("TLS key {}: {}", options.tls_key_file, tls_ec.message()));
    }
  }
  beast::error_code ec;
  const auto addr = net::ip::make_address(host.empty() ? "0.0.0.0" : host, ec);
  if (ec) {
    return fail(errc::invalid,
                fmt::format("--http {}: '{}' is not an IP address", options.address, host));
  }
  const tcp::endpoint ep(addr, static_cast<uint16_t>(port));
  impl->acceptor.open(ep.protocol(), ec);
  if (!ec) impl->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(ep, ec);
  if (!ec) impl->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return fail(errc::io,
                fmt::format("--http {}: cannot listen: {}", options.address, ec.message()));
  }
  impl->port = impl->acceptor.local_endpoint().port();
  impl->accept();
  http_server::impl* raw = impl.get();
  for (unsigned i = 0; i < std::max(1u, options.threads); ++i) {
    raw->threads.emplace_back([raw] {
      for (;;) {
        try {
          raw->ioc.run();
          return;
        } catch (const std::exception& e) {
          raw->stats.handler_exceptions++;
          fmt::print(stderr, "auterity: api: {}\n", e.what());
        }
      }
    });
  }
  return std::unique_ptr<http_server>(new http_server(std::move(impl)));
}

}  // namespace auterity
