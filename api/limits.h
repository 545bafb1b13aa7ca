#pragma once
// Named limits of the HTTP API (api/README.md, "Limits"). Each is enforced by the server or
// the service and answered with the status named here.

#include <cstddef>
#include <cstdint>

namespace auterity::api_limits {

// A request body larger than this is answered 413 and the connection closed. A definition,
// policy or input is a JSON field of one ingress record, and a record is at most
// record_bytes_max (1 MiB, engine/log.h) in all.
inline constexpr size_t body_bytes_max = 1 << 20;
// Request line and headers together; larger: 431 and the connection closed.
inline constexpr size_t header_bytes_max = 16 * 1024;
// Nesting of objects and arrays in a request body; deeper: 400 before parsing. The engine's
// own limit on an input or payload is limits::json_value_depth_max (128); the request wraps
// it in two levels.
inline constexpr int json_depth_max = 130;
// Connections open at once; the next is accepted and closed at once.
inline constexpr size_t connections_max = 1024;
// From the first byte of a request (or the end of the previous response on a kept-alive
// connection) to its last byte. A slower client (slowloris) gets 408 if it sent part of a
// request, or the connection is closed if it sent nothing.
inline constexpr int64_t request_read_ms_max = 10'000;
// Writing one response; a client that does not read it is disconnected.
inline constexpr int64_t response_write_ms_max = 10'000;
// ?wait_ms= on commands: longer waits are cut to this (the answer says "pending").
inline constexpr int64_t wait_ms_max = 30'000;
// Live event streams (server-sent events) open at once; the next gets 503.
inline constexpr size_t event_streams_max = 256;
// How often an event stream looks for new events, and how often it sends a comment line so
// that proxies keep it open.
inline constexpr int64_t event_poll_ms = 100;
inline constexpr int64_t event_heartbeat_ms = 15'000;
// Executions one page of GET .../executions returns at most (?limit= default 50).
inline constexpr size_t page_executions_max = 500;
// Records one ingress commit of the API takes (commands wait in a queue per partition and go
// to the log together: one write and one fdatasync for all of them).
inline constexpr size_t ingress_batch_records_max = 2048;
// Commands waiting for their commit, per partition; past it: 503 with Retry-After.
inline constexpr size_t ingress_queue_records_max = 65'536;
// The timeline of one execution as JSON: events read at most (an execution has at most
// limits::events_per_execution_max = 2048).
inline constexpr size_t timeline_events_max = 4096;
// How often the server looks at the key file for keys created or revoked by
// `auterity keys` while it runs: a revocation takes effect within this time.
inline constexpr int64_t key_file_check_ms = 250;
// POST /v1/partitions/scale: partitions taking tenants asked for, 1 to this (the embedded log's
// own limit, node/scale.cc); more: 400.
inline constexpr uint32_t scale_partitions_max = 1000;
// Clock skew allowed on a JWT's exp and nbf.
inline constexpr int64_t jwt_leeway_s = 30;
// A JWT (the whole compact form) longer than this is refused without decoding.
inline constexpr size_t jwt_bytes_max = 8 * 1024;

}  // namespace auterity::api_limits
