#pragma once
// What the connector tests share: command envelopes, a command run through a connector as the
// worker runtime would, and the control endpoints of the fake servers (fake_ai.py,
// fake_services.py: /_script, /_requests, /_effects).

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/clock.h"
#include "engine/http_client.h"
#include "engine/record.h"
#include "engine/worker_runtime.h"
#include "tests/connectors/service_process.h"

namespace auterity::testing {

// The deadline a command gets when a test names none: far enough for a slow CI machine.
inline constexpr int64_t command_deadline_ms_in_tests = 20'000;

// The header of a command of tenant "acme" with record id `id`.
inline envelope_header command_header(std::string_view execution, std::string_view id,
                                      std::string_view causation) {
  envelope_header h;
  h.kind = fbs::RecordKind::Command;
  h.tenant_id = "acme";
  h.execution_id = execution;
  h.record_id = id;
  h.causation_id = causation;
  h.timestamp_ms = 1;
  return h;
}

// What a connector factory made; nullptr, and the factory's reason as a test failure, if it
// refused.
inline std::unique_ptr<connector> made(result<std::unique_ptr<connector>> c) {
  EXPECT_TRUE(c.has_value()) << c.error().message;
  return c ? std::move(*c) : nullptr;
}

// Runs the command envelope `bytes` through `c` with idempotency key `key`, due by deadline_ms
// (0: command_deadline_ms_in_tests from now).
inline ack_result run_command(connector& c, std::string_view bytes, int64_t deadline_ms,
                              std::string_view key) {
  const fbs::Envelope* env = decode_envelope(bytes);
  EXPECT_NE(env, nullptr);
  command_context ctx;
  ctx.deadline_ms = deadline_ms ? deadline_ms : wall_now_ms() + command_deadline_ms_in_tests;
  ctx.idempotency_key = key;
  return c.execute(*env, ctx);
}

// A call to a fake server's control endpoint; its JSON answer (null if the call failed).
inline nlohmann::json fake_control(const service_process& server, const std::string& method,
                                   const std::string& path, const nlohmann::json& body = nullptr) {
  http_request req;
  req.method = method;
  req.url = server.url(path);
  if (!body.is_null()) {
    req.body = body.dump();
    req.headers.emplace_back("content-type", "application/json");
  }
  auto r = http_call(req);
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
  return r ? nlohmann::json::parse(r->body) : nlohmann::json();
}

// Makes the fake server answer requests whose path starts with `prefix` with `responses`, in
// order, before it answers as usual again.
inline void fake_script(const service_process& server, const std::string& prefix,
                        const nlohmann::json& responses) {
  fake_control(server, "POST", "/_script", {{"path_prefix", prefix}, {"responses", responses}});
}

// Writes a self-signed certificate and its key, dir/cert.pem and dir/key.pem, with the openssl
// CLI: subject CN=`common_name`, subjectAltName `alt_name` ("DNS:localhost", "IP:127.0.0.1").
// False if openssl failed.
inline bool make_self_signed_certificate(const std::filesystem::path& dir,
                                         std::string_view common_name, std::string_view alt_name) {
  const std::string cmd =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=" + std::string(common_name) +
      " -addext subjectAltName=" + std::string(alt_name) + " -keyout " +
      (dir / "key.pem").string() + " -out " + (dir / "cert.pem").string() + " >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

}  // namespace auterity::testing
