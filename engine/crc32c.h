#pragma once
// CRC-32C (Castagnoli), the checksum of the embedded log's frames. Private to the engine.
//
// extend() uses the SSE4.2 crc32 instruction when the CPU has it (checked once at run time) and
// a byte-at-a-time table otherwise; both give the same values.

#include <cstddef>
#include <cstdint>

namespace auterity::crc32c {

// The CRC-32C of (the bytes `crc` was computed over) followed by [data, data + n).
// extend(0, data, n) is the CRC-32C of the n bytes alone.
uint32_t extend(uint32_t crc, const void* data, size_t n);

inline uint32_t value(const void* data, size_t n) { return extend(0, data, n); }

// Both implementations, exposed so a test can compare them.
namespace detail {
uint32_t extend_table(uint32_t crc, const void* data, size_t n);
bool hardware_available();
// Only callable when hardware_available().
uint32_t extend_hardware(uint32_t crc, const void* data, size_t n);
}  // namespace detail

}  // namespace auterity::crc32c
