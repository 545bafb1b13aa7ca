// Fixed-width integers in the host's byte order, for files a process writes and later reads back
// on the same kind of machine: the embedded log's frames, the chain check's spill file.
#pragma once

#include <cstring>
#include <string>
#include <type_traits>

namespace auterity {

template <typename T>
requires std::is_integral_v<T>
void put_fixed(std::string& out, T v) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));
  out.append(bytes, sizeof(T));
}

// Reads sizeof(T) bytes at `p`; the caller has checked they are there.
template <typename T>
requires std::is_integral_v<T> T get_fixed(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace auterity
