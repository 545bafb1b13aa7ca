#pragma once
// Expected failures are values: result<T> = std::expected<T, error>. No exceptions cross a
// subsystem boundary.

#include <expected>
#include <string>

namespace auterity {

enum class errc {
  io = 1,     // the operating system refused a read, write or sync
  corrupt,    // stored bytes failed their checksum outside the recoverable tail
  locked,     // another process holds the data directory
  invalid,    // the caller passed something out of range
  too_large,  // a named limit was exceeded
  not_found,
  rocksdb,       // RocksDB returned a non-ok status
  timeout,       // a deadline passed before the work finished
  fenced,        // another process took this instance's identity (same transactional id)
  unauthorized,  // a server refused our credentials, certificate or permissions
};

const char* errc_name(errc);

struct error {
  errc code;
  std::string message;
};

template <typename T>
using result = std::expected<T, error>;

inline std::unexpected<error> fail(errc code, std::string message) {
  return std::unexpected<error>(error{code, std::move(message)});
}

}  // namespace auterity
