#pragma once
// What the API tests share: an engine on the embedded log with the API in front of it, raw
// and parsed HTTP exchanges, and JWTs signed with keys made for the test.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <nlohmann/json.hpp>

#include "api/node_access.h"
#include "api/service.h"
#include "engine/http_client.h"
#include "engine/record.h"
#include "node/node.h"
#include "tests/run_command.h"

extern char** environ;

namespace auterity::api_test {

using json = nlohmann::json;

inline constexpr const char* waits_definition = R"({"workflow":"waits","version":1,"steps":[
    {"id":"w","kind":"wait_signal","signal":"go","timeout_ms":600000}]})";

struct reply {
  int status = 0;
  std::string content_type;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  json j() const { return json::parse(body, nullptr, false); }
  std::string header(std::string_view n) const {
    for (auto& [k, v] : headers) {
      if (k == n) return v;
    }
    return {};
  }
};

// Connects to 127.0.0.1:port; -1 on failure.
inline int connect_to(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Reads until the peer closes or timeout_ms passes; returns what came.
inline std::string read_all(int fd, int timeout_ms) {
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  char buf[65536];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (::poll(&p, 1, static_cast<int>(std::max<int64_t>(left, 1))) <= 0) break;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, size_t(n));
  }
  return out;
}

// Sends raw bytes and returns everything the server sent before closing (or timeout).
inline std::string raw_exchange(uint16_t port, const std::string& bytes, int timeout_ms = 5000) {
  int fd = connect_to(port);
  if (fd < 0) return "<connect failed>";
  (void)::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  std::string out = read_all(fd, timeout_ms);
  ::close(fd);
  return out;
}

// Starts a program with stdout and stderr appended to `out`; its pid, -1 on failure.
inline pid_t spawn(std::vector<std::string> args, const std::string& out) {
  return auterity::testing::spawn_logged(std::move(args), out);
}

// Polls every 100 ms, at most `rounds` times, until none of `tenants` has a running execution
// (`GET /v1/tenants/{t}/executions?status=running`); true once they all ended. `Client` has
// `call(method, path)` returning a `reply`.
template <typename Client>
bool await_all_ended(Client& c, const std::vector<std::string>& tenants, int rounds = 600) {
  for (int round = 0; round < rounds; ++round) {
    bool all_ended = true;
    for (const std::string& t : tenants) {
      auto r = c.call("GET", fmt::format("/v1/tenants/{}/executions?status=running&limit=1", t));
      all_ended = all_ended && r.status == 200 && r.j()["executions"].empty();
    }
    if (all_ended) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// SIGTERM to `pid`, then its wait status.
inline int stop_and_wait(pid_t pid) {
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

// Calls fn(partition, envelope) for every record of stream s, partition by partition in offset
// order (an independent reader of a stopped engine's log); a record that does not decode fails
// the test.
inline void for_each_envelope(log& l, stream s,
                              const std::function<void(uint32_t, const fbs::Envelope&)>& fn) {
  std::vector<record> recs;
  for (uint32_t p = 0; p < l.partition_count(); ++p) {
    for (uint64_t off = 0;;) {
      recs.clear();
      auto n = l.read(s, p, off, 4096, 16 << 20, recs);
      ASSERT_TRUE(n) << n.error().message;
      if (*n == 0) break;
      off = recs.back().offset + 1;
      for (const record& r : recs) {
        const fbs::Envelope* e = decode_envelope(r.value);
        ASSERT_NE(e, nullptr) << "an undecodable record at " << p << "/" << r.offset;
        fn(p, *e);
      }
    }
  }
}

// An empty scratch path for a data directory, unique to this process: auterity-<name>-<pid>.
inline std::string scratch_dir(std::string_view name) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / fmt::format("auterity-{}-{}", name, ::getpid()))
          .string();
  std::filesystem::remove_all(dir);
  return dir;
}

// The endpoint file of `auterity run --http` process `pid` on `data` (api/README.md, "The CLI
// and a running engine"), once it is written; nullopt after 10 s.
inline std::optional<json> read_endpoint(const std::string& data, pid_t pid) {
  for (int i = 0; i < 200; ++i) {
    std::ifstream in(data + "/api/endpoint.json");
    json j = json::parse(in, nullptr, false);
    if (j.is_object() && j.value("pid", 0) == pid) return j;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return std::nullopt;
}

// One request to such an engine with its endpoint's local admin key.
inline result<http_response> endpoint_call(const json& endpoint, std::string_view method,
                                           const std::string& path, const std::string& body,
                                           int64_t timeout_ms) {
  http_request r;
  r.method = std::string(method);
  r.url = endpoint["url"].get<std::string>() + path;
  r.headers = {{"Authorization", "Bearer " + endpoint["key"].get<std::string>()},
               {"Content-Type", "application/json"}};
  r.body = body;
  r.deadline_ms = wall_now_ms() + timeout_ms;
  return http_call(r);
}

class engine_with_api {
 public:
  explicit engine_with_api(api_options o = {}, std::string dir = {}) {
    _dir = dir.empty() ? std::filesystem::temp_directory_path() /
                             fmt::format("auterity-api-test-{}-{}", ::getpid(), counter()++)
                       : std::filesystem::path(dir);
    std::filesystem::remove_all(_dir);
    node_options no;
    no.data_dir = _dir.string();
    no.partitions = 3;
    no.fsync = false;
    auto n = node::open(no, _clock);
    if (!n) throw std::runtime_error(n.error().message);
    _node = std::move(*n);
    if (auto r = _node->recover(); !r) throw std::runtime_error(r.error().message);
    _node->start();
    _access = std::make_unique<node_access>(*_node);
    _access->set_ready(true);
    o.keys_file = key_store::default_path(_dir.string());
    auto s = api_server::start(*_access, o, _clock);
    if (!s) {
      _node->stop();
      _node.reset();
      std::filesystem::remove_all(_dir);
      throw std::runtime_error(s.error().message);
    }
    _server = std::move(*s);
  }
  ~engine_with_api() {
    _server.reset();
    _node->stop();
    _node.reset();
    std::filesystem::remove_all(_dir);
  }

  uint16_t port() const { return _server->port(); }
  node& engine() { return *_node; }
  std::string dir() const { return _dir.string(); }
  std::string key(std::string_view tenant, std::string_view role) {
    key_store ks(key_store::default_path(dir()));
    return *ks.create(tenant, *parse_role(role), "test", wall_now_ms());
  }

  std::string scheme = "http";
  http_tls_options tls;  // for https

  reply call(std::string_view method, const std::string& path, const std::string& credential,
             const std::string& body = {}, std::string content_type = "application/json",
             std::vector<std::pair<std::string, std::string>> extra = {}) {
    http_request r;
    r.method = std::string(method);
    r.url = fmt::format("{}://127.0.0.1:{}{}", scheme, port(), path);
    if (!credential.empty()) r.headers.emplace_back("Authorization", "Bearer " + credential);
    if (!body.empty() || method != "GET") r.headers.emplace_back("Content-Type", content_type);
    for (auto& h : extra) r.headers.push_back(h);
    r.body = body;
    auto resp = http_call(r, tls);
    if (!resp) return reply{-1, "", resp.error().message, {}};
    return reply{resp->status, resp->header("content-type"), resp->body, resp->headers};
  }

  // Publishes the "waits" workflow for tenant and starts execution `id` of it.
  void seed(const std::string& tenant, const std::string& id) {
    const std::string op = key(tenant, "operator");
    auto p = call("POST", fmt::format("/v1/tenants/{}/definitions?wait_ms=10000", tenant), op,
                  json{{"definition", json::parse(waits_definition)}}.dump());
    ASSERT_TRUE(p.status == 201 || p.status == 409) << p.status << p.body;
    auto s = call("POST", fmt::format("/v1/tenants/{}/executions?wait_ms=10000", tenant), op,
                  json{{"execution_id", id}, {"workflow", "waits"}, {"input", {{"n", 1}}}}.dump());
    ASSERT_EQ(s.status, 201) << s.body;
  }

 private:
  static int& counter() {
    static int c = 0;
    return c;
  }
  std::filesystem::path _dir;
  system_clock _clock;
  std::unique_ptr<node> _node;
  std::unique_ptr<node_access> _access;
  std::unique_ptr<api_server> _server;
};

// ------------------------------------------------------------------------------------ JWT

struct signing_key {
  EVP_PKEY* pkey = nullptr;
  std::string kid;
  bool ec = false;
  signing_key(bool ec_key, std::string id) : kid(std::move(id)), ec(ec_key) {
    pkey = ec ? EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")
              : EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048});
  }
  ~signing_key() { EVP_PKEY_free(pkey); }
  signing_key(const signing_key&) = delete;

  json jwk() const {
    if (ec) {
      unsigned char pub[65];
      size_t len = 0;
      EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub, &len);
      std::string p(reinterpret_cast<char*>(pub), len);
      return {{"kty", "EC"},
              {"crv", "P-256"},
              {"kid", kid},
              {"x", base64url_encode(p.substr(1, 32))},
              {"y", base64url_encode(p.substr(33, 32))}};
    }
    BIGNUM *n = nullptr, *e = nullptr;
    EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n);
    EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e);
    auto bytes = [](BIGNUM* b) {
      std::string s(size_t(BN_num_bytes(b)), '\0');
      BN_bn2bin(b, reinterpret_cast<unsigned char*>(s.data()));
      return s;
    };
    json j = {{"kty", "RSA"},
              {"kid", kid},
              {"n", base64url_encode(bytes(n))},
              {"e", base64url_encode(bytes(e))}};
    BN_free(n);
    BN_free(e);
    return j;
  }

  std::string sign(const json& claims, std::string alg = "") const {
    if (alg.empty()) alg = ec ? "ES256" : "RS256";
    const std::string input =
        base64url_encode(json{{"alg", alg}, {"kid", kid}, {"typ", "JWT"}}.dump()) + "." +
        base64url_encode(claims.dump());
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    size_t len = 0;
    EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, pkey);
    EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()),
                   input.size());
    std::string sig(len, '\0');
    EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                   reinterpret_cast<const unsigned char*>(input.data()), input.size());
    sig.resize(len);
    EVP_MD_CTX_free(ctx);
    if (ec) {  // DER -> r || s
      const unsigned char* p = reinterpret_cast<const unsigned char*>(sig.data());
      ECDSA_SIG* s = d2i_ECDSA_SIG(nullptr, &p, long(sig.size()));
      std::string raw(64, '\0');
      BN_bn2binpad(ECDSA_SIG_get0_r(s), reinterpret_cast<unsigned char*>(raw.data()), 32);
      BN_bn2binpad(ECDSA_SIG_get0_s(s), reinterpret_cast<unsigned char*>(raw.data()) + 32, 32);
      ECDSA_SIG_free(s);
      sig = raw;
    }
    return input + "." + base64url_encode(sig);
  }
};

}  // namespace auterity::api_test
