#include "replay/digest.h"

#include <memory>

#include <openssl/evp.h>

#include "engine/assert.h"

namespace auterity {

namespace {

struct md_deleter {
  void operator()(EVP_MD* md) const { EVP_MD_free(md); }
};
struct ctx_deleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

struct hasher {
  std::unique_ptr<EVP_MD, md_deleter> md{EVP_MD_fetch(nullptr, "SHA256", nullptr)};
  std::unique_ptr<EVP_MD_CTX, ctx_deleter> ctx{EVP_MD_CTX_new()};
};

}  // namespace

hash256 fast_sha256(std::string_view bytes) {
  thread_local hasher h;
  vassert(h.md && h.ctx, "OpenSSL has no SHA-256");
  hash256 out;
  unsigned int n = 0;
  const bool ok = EVP_DigestInit_ex2(h.ctx.get(), h.md.get(), nullptr) &&
                  EVP_DigestUpdate(h.ctx.get(), bytes.data(), bytes.size()) &&
                  EVP_DigestFinal_ex(h.ctx.get(), out.data(), &n);
  vassert(ok && n == out.size(), "SHA-256 failed");
  return out;
}

}  // namespace auterity
