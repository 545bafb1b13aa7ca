#pragma once
// SHA-256 for the chain check's hot loop. engine/record.h's sha256() calls OpenSSL's one-shot
// SHA256(), which in OpenSSL 3 looks the algorithm up on every call (a lock, a reference
// count): a fifth of the chain check's time. This one fetches it once per thread and reuses
// its context; the digest is the same.

#include <string_view>

#include "engine/record.h"

namespace auterity {

hash256 fast_sha256(std::string_view bytes);

}  // namespace auterity
