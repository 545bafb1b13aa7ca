#pragma once
// A blocking HTTP/1.1 client for connectors (Boost.Beast over Boost.Asio, TLS through
// OpenSSL). One request per call on a fresh connection; the whole exchange — resolve,
// connect, TLS handshake, write, read — must finish by the request's deadline.
//
// Limits (named, enforced, documented in engine/README.md):
//   http_response_bytes_max   a larger response body is an error (errc::too_large)
//   http_request_bytes_max    a larger request body is refused before connecting
//
// Errors: errc::timeout when the deadline passes, errc::io when the peer cannot be reached or
// breaks the protocol, errc::invalid for a bad URL or request, errc::too_large as above. An
// HTTP status, 4xx and 5xx included, is a response, not an error. Messages never contain
// header values (they may hold secrets).

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/result.h"

namespace auterity {

inline constexpr size_t http_response_bytes_max = 4 << 20;
inline constexpr size_t http_request_bytes_max = 4 << 20;

struct http_request {
  std::string method = "POST";  // GET, POST, PUT, PATCH, DELETE
  std::string url;              // http://host[:port]/path?query or https://...
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  int64_t deadline_ms = 0;  // wall clock (system_clock ms); 0: 30 s from now
};

struct http_tls_options {
  std::string ca_file;  // PEM bundle to trust instead of the system's (tests, private CAs)
  bool verify = true;   // peer certificate and host name
};

struct http_response {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // as received, names lower-case
  std::string body;
  std::string header(std::string_view name) const;  // first value, "" if absent
};

result<http_response> http_call(const http_request& request, const http_tls_options& tls = {});

// Splits a URL; errc::invalid with the reason for anything but http(s)://host[:port][/...].
struct url_parts {
  bool tls = false;
  std::string host;
  std::string port;    // "80"/"443" when the URL has none
  std::string target;  // path and query, "/" at least
};
result<url_parts> parse_url(std::string_view url);

// Header names, schemes and media types are case-insensitive ASCII (RFC 9110): compare them
// lower-cased.
std::string ascii_lower(std::string_view s);

}  // namespace auterity
