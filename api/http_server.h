#pragma once
// The API's HTTP/1.1 server (Boost.Beast over Asio; only http_server.cc includes Boost):
// keep-alive connections, one request at a time per connection, answered by a handler that
// may answer later from any thread (a command waits for its commit, ?wait_ms= for the
// engine's decision), and long-lived event streams.
//
// Limits (api/limits.h): header_bytes_max (431), body_bytes_max (413), request_read_ms_max
// (408, or close if nothing was sent), response_write_ms_max, connections_max (accepted and
// closed). Malformed HTTP gets 400 and the connection closed. A handler exception is a bug:
// answered 500 and logged, never a dead thread.
//
// Threads: `threads` run the io_context; handlers run on them and must not block for long
// (state reads are fine; commits are handed to api/ingress_batcher.h).

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/result.h"

namespace auterity {

struct api_request {
  std::string method;                                        // "GET", "POST", ...
  std::string target;                                        // path and query as sent
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-case
  std::string body;
  std::string header(std::string_view lower_name) const;  // first value, "" if absent
};

struct api_response {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // An event stream: after the headers (and `body`, if any) the server calls next() every
  // api_limits::event_poll_ms on the connection's strand; it appends what to send and returns
  // false when the stream is over. on_close runs once when the stream ends for any reason.
  std::function<bool(std::string& out)> next;
  std::function<void()> on_close;
};

// Answers a request exactly once, from any thread.
using api_responder = std::function<void(api_response)>;
using api_handler = std::function<void(api_request&&, api_responder)>;

struct http_server_options {
  std::string address = "127.0.0.1:0";  // host:port; port 0 picks a free one
  unsigned threads = 2;
  // TLS (OpenSSL, TLS 1.2 and up) on every connection when both are set: PEM files of the
  // certificate chain and of its private key.
  std::string tls_cert_file;
  std::string tls_key_file;
};

struct http_server_stats {
  std::atomic<uint64_t> connections_refused{0};  // over connections_max
  std::atomic<uint64_t> bad_requests{0};         // malformed, oversized, too slow
  std::atomic<uint64_t> handler_exceptions{0};
};

class http_server {
 public:
  static result<std::unique_ptr<http_server>> start(const http_server_options& options,
                                                    api_handler handler);
  ~http_server();  // stop()s
  // Closes the listener and stops the threads; pending answers are dropped with their
  // connections when the server is destroyed. Idempotent.
  void stop();
  uint16_t port() const;
  const http_server_stats& stats() const;

  struct impl;

 private:
  explicit http_server(std::unique_ptr<impl> impl);
  std::unique_ptr<impl> _impl;
};

}  // namespace auterity
