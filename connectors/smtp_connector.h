#pragma once
// Email over SMTP for commands.notify (channel "email"): one SMTP conversation per
// SendNotification (Boost.Asio on a private io_context, so the whole exchange — resolve,
// connect, TLS, every reply — is bounded by the command's deadline). Configuration keys, what
// is sent and how replies are classified: connectors/README.md, "Email (SMTP)".
//
// Conversation: greeting 220, EHLO (HELO if EHLO is refused), STARTTLS + EHLO again when
// configured, AUTH PLAIN or LOGIN when a username is configured, MAIL FROM, RCPT TO (the
// command's `to`), DATA (From, To, Subject — RFC 2047 when not ASCII — Date, Message-ID
// "<idempotency key, '/' -> '.'@auterity>", MIME-Version, text/plain; charset=utf-8, 7bit or
// quoted-printable; dot-stuffed, CRLF), QUIT.
//
// Classification: 4xx replies, timeouts and connection errors are retryable; 5xx replies are
// permanent, with the command and the server's reply in the reason; a `to` that is not one
// plain address, or CR/LF/control characters in `to` or `subject` (header injection), is
// refused permanently before connecting. Success output:
//   {"channel": "email", "message_id": "<...>", "accepted": "<the server's reply to DATA>"}
// The connector holds no mutable state: execute() is safe from many threads.

#include <cstddef>
#include <memory>

#include <nlohmann/json_fwd.hpp>

#include "engine/http_client.h"
#include "engine/worker_runtime.h"

namespace auterity {

// Limits.
inline constexpr size_t smtp_reply_line_bytes_max = 4096;   // one reply line (RFC 5321: 512)
inline constexpr size_t smtp_reply_lines_max = 64;          // lines of one multi-line reply
inline constexpr size_t smtp_address_bytes_max = 254;       // a mailbox (RFC 5321 path limit)
inline constexpr size_t smtp_subject_bytes_max = 512;       // the subject, before encoding
inline constexpr size_t smtp_body_bytes_max = 1 << 20;      // the body, before encoding
inline constexpr size_t smtp_reason_reply_bytes_max = 512;  // server reply kept in a reason

// Section keys: api ("smtp"), host (required), port (default 587 with starttls, 465 with tls,
// else 25), from (required), username + password (secret reference), starttls (bool), tls
// (bool: TLS from the first byte, SMTPS), allow_plain_auth (bool: AUTH without TLS, for
// loopback tests only), timeout_ms, helo_name (default "localhost").
result<std::unique_ptr<connector>> make_smtp_connector(const nlohmann::json& section,
                                                       const http_tls_options& tls);

}  // namespace auterity
