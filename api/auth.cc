#include "api/auth.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/core.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <nlohmann/json.hpp>

#include "api/limits.h"
#include "engine/record.h"
#include "processors/ids.h"

namespace auterity {

using json = nlohmann::json;

std::optional<api_role> parse_role(std::string_view name) {
  if (name == "publisher") return api_role::publisher;
  if (name == "auditor") return api_role::auditor;
  if (name == "operator") return api_role::operator_;
  if (name == "admin") return api_role::admin;
  return std::nullopt;
}

std::string_view role_name(api_role r) {
  switch (r) {
    case api_role::publisher:
      return "publisher";
    case api_role::auditor:
      return "auditor";
    case api_role::operator_:
      return "operator";
    case api_role::admin:
      return "admin";
  }
  return "?";
}

bool role_allows(api_role r, api_action a) {
  switch (r) {
    case api_role::admin:
      return true;
    case api_role::operator_:
      return a != api_action::move;
    case api_role::publisher:
      return a == api_action::start || a == api_action::signal;
    case api_role::auditor:
      return a == api_action::read;
  }
  return false;
}

// ------------------------------------------------------------------------------ base64url

std::string base64url_encode(std::string_view in) {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += alphabet[(acc >> bits) & 63];
    }
  }
  if (bits > 0) out += alphabet[(acc << (6 - bits)) & 63];
  return out;
}

std::optional<std::string> base64url_decode(std::string_view in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z')
      v = c - 'A';
    else if (c >= 'a' && c <= 'z')
      v = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      v = c - '0' + 52;
    else if (c == '-')
      v = 62;
    else if (c == '_')
      v = 63;
    else
      return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  if (bits >= 6) return std::nullopt;  // a lone trailing character cannot be
  return out;
}

// ------------------------------------------------------------------------------ API keys

namespace {

constexpr size_t key_id_hex = 16;      // 8 random bytes
constexpr size_t key_secret_hex = 64;  // 32 random bytes

std::string random_hex(size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) != 1) {
    std::abort();  // no randomness: nothing safe to hand out
  }
  return hex(reinterpret_cast<const uint8_t*>(raw.data()), raw.size());
}

bool is_hex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

result<void> append_line(const std::string& path, const std::string& line) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  if (ec) return fail(errc::io, fmt::format("cannot create {}: {}", path, ec.message()));
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return fail(errc::io, fmt::format("cannot open {}: {}", path, std::strerror(errno)));
  ::flock(fd, LOCK_EX);
  const std::string text = line + "\n";
  const ssize_t n = ::write(fd, text.data(), text.size());
  const bool ok = n == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  const int saved = errno;
  ::close(fd);
  if (!ok) return fail(errc::io, fmt::format("cannot write {}: {}", path, std::strerror(saved)));
  return {};
}

}  // namespace

key_store::key_store(std::string path) : _path(std::move(path)) {}

std::string key_store::default_path(const std::string& data_dir) {
  return data_dir + "/api/keys.jsonl";
}

result<void> key_store::load_locked() {
  std::map<std::string, key_entry, std::less<>> keys;
  std::ifstream in(_path);
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("op") || !j.contains("id")) {
      return fail(errc::corrupt, fmt::format("{}:{}: not a key record", _path, line_no));
    }
    const std::string op = j.value("op", "");
    const std::string id = j.value("id", "");
    if (op == "create") {
      key_entry k;
      k.id = id;
      k.tenant = j.value("tenant", "");
      auto role = parse_role(j.value("role", ""));
      if (!role) return fail(errc::corrupt, fmt::format("{}:{}: unknown role", _path, line_no));
      k.role = *role;
      k.name = j.value("name", "");
      k.sha256_hex = j.value("sha256", "");
      k.created_ms = j.value("at_ms", int64_t{0});
      keys[id] = std::move(k);
    } else if (op == "revoke") {
      if (auto it = keys.find(id); it != keys.end()) it->second.revoked_ms = j.value("at_ms", 1);
    }
  }
  _keys = std::move(keys);
  return {};
}

void key_store::maybe_reload_locked(bool force) {
  const auto now = std::chrono::steady_clock::now();
  if (!force && now - _checked < std::chrono::milliseconds(api_limits::key_file_check_ms)) return;
  _checked = now;
  struct stat st {};
  int64_t mtime = -2, size = -2;
  if (::stat(_path.c_str(), &st) == 0) {
    mtime = int64_t(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
    size = st.st_size;
  }
  if (mtime == _mtime_ns && size == _size) return;
  if (load_locked()) {
    _mtime_ns = mtime;
    _size = size;
  }
}

result<std::string> key_store::create(std::string_view tenant, api_role role, std::string_view name,
                                      int64_t now_ms) {
  if (tenant == any_tenant ? role != api_role::admin : !ids::valid_name(tenant)) {
    return fail(errc::invalid, tenant == any_tenant
                                   ? "tenant '*' (every tenant) is for the admin role only"
                                   : fmt::format("tenant id: {}", ids::name_rule));
  }
  const std::string id = "k" + random_hex(key_id_hex / 2).substr(1);
  const std::string secret = random_hex(key_secret_hex / 2);
  json j = {{"op", "create"},
            {"id", id},
            {"tenant", tenant},
            {"role", role_name(role)},
            {"sha256", hex(sha256(secret))},
            {"name", name},
            {"at_ms", now_ms}};
  if (auto r = append_line(_path, j.dump()); !r) return std::unexpected(r.error());
  return fmt::format("ak_{}_{}", id, secret);
}

result<void> key_store::revoke(std::string_view id, int64_t now_ms) {
  std::lock_guard lock(_mu);
  if (auto r = load_locked(); !r) return r;
  auto it = _keys.find(id);
  if (it == _keys.end() || it->second.revoked_ms != 0) {
    return fail(errc::not_found, fmt::format("no live key with id {}", id));
  }
  json j = {{"op", "revoke"}, {"id", id}, {"at_ms", now_ms}};
  return append_line(_path, j.dump());
}

result<std::vector<key_entry>> key_store::list() {
  std::lock_guard lock(_mu);
  if (auto r = load_locked(); !r) return std::unexpected(r.error());
  std::vector<key_entry> out;
  for (const auto& [id, k] : _keys) out.push_back(k);
  return out;
}

std::string key_store::add_ephemeral(std::string_view tenant, api_role role, std::string_view id) {
  const std::string secret = random_hex(key_secret_hex / 2);
  key_entry k;
  k.id = std::string(id);
  k.tenant = std::string(tenant);
  k.role = role;
  k.sha256_hex = hex(sha256(secret));
  std::lock_guard lock(_mu);
  _ephemeral[k.id] = k;
  return fmt::format("ak_{}_{}", id, secret);
}

std::optional<principal> key_store::authenticate(std::string_view presented) {
  // ak_<id>_<secret>; the id never holds '_'.
  if (!presented.starts_with("ak_")) return std::nullopt;
  presented.remove_prefix(3);
  const size_t sep = presented.find('_');
  if (sep == std::string_view::npos) return std::nullopt;
  const std::string_view id = presented.substr(0, sep);
  const std::string_view secret = presented.substr(sep + 1);
  if (id.empty() || id.size() > 64 || secret.size() != key_secret_hex || !is_hex(secret)) {
    return std::nullopt;
  }
  const std::string digest = hex(sha256(secret));
  std::lock_guard lock(_mu);
  // A key not known yet may have just been created: look at the file (one stat) now.
  maybe_reload_locked(!_keys.contains(id) && !_ephemeral.contains(id));
  const key_entry* k = nullptr;
  if (auto it = _keys.find(id); it != _keys.end()) k = &it->second;
  if (auto it = _ephemeral.find(id); !k && it != _ephemeral.end()) k = &it->second;
  if (!k || k->revoked_ms != 0 || k->sha256_hex.size() != digest.size()) return std::nullopt;
  if (CRYPTO_memcmp(k->sha256_hex.data(), digest.data(), digest.size()) != 0) return std::nullopt;
  return principal{k->tenant, k->role, "key:" + k->id};
}

// ------------------------------------------------------------------------------------ JWT

struct jwt_verifier::key {
  std::string kid;
  std::string kty;  // "RSA" or "EC"
  EVP_PKEY* pkey = nullptr;
  ~key() { EVP_PKEY_free(pkey); }
};

namespace {

EVP_PKEY* pkey_from_params(const char* type, OSSL_PARAM_BLD* bld) {
  OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(bld);
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr);
  EVP_PKEY* pkey = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
      EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
    pkey = nullptr;
  }
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  return pkey;
}

EVP_PKEY* rsa_key(const std::string& n, const std::string& e) {
  BIGNUM* bn_n =
      BN_bin2bn(reinterpret_cast<const unsigned char*>(n.data()), int(n.size()), nullptr);
  BIGNUM* bn_e =
      BN_bin2bn(reinterpret_cast<const unsigned char*>(e.data()), int(e.size()), nullptr);
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  EVP_PKEY* pkey = nullptr;
  if (bn_n && bn_e && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) &&
      OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e)) {
    pkey = pkey_from_params("RSA", bld);
  }
  OSSL_PARAM_BLD_free(bld);
  BN_free(bn_n);
  BN_free(bn_e);
  return pkey;
}

EVP_PKEY* p256_key(const std::string& x, const std::string& y) {
  if (x.size() != 32 || y.size() != 32) return nullptr;
  std::string point = "\x04" + x + y;  // uncompressed SEC1 point
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  EVP_PKEY* pkey = nullptr;
  if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) &&
      OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size())) {
    pkey = pkey_from_params("EC", bld);
  }
  OSSL_PARAM_BLD_free(bld);
  return pkey;
}

// JWS ES256 signatures are r || s (32 bytes each); EVP wants DER.
std::optional<std::string> es256_der(const std::string& raw) {
  if (raw.size() != 64) return std::nullopt;
  ECDSA_SIG* sig = ECDSA_SIG_new();
  BIGNUM* r = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()), 32, nullptr);
  BIGNUM* s = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()) + 32, 32, nullptr);
  if (!sig || !r || !s || ECDSA_SIG_set0(sig, r, s) != 1) {
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return std::nullopt;
  }
  unsigned char* der = nullptr;
  const int len = i2d_ECDSA_SIG(sig, &der);
  ECDSA_SIG_free(sig);
  if (len <= 0) return std::nullopt;
  std::string out(reinterpret_cast<char*>(der), size_t(len));
  OPENSSL_free(der);
  return out;
}

bool verify_sha256(EVP_PKEY* pkey, std::string_view data, const std::string& sig) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = ctx && EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, pkey) == 1 &&
            EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                             reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

std::optional<std::string> b64_field(const json& j, const char* name) {
  if (!j.contains(name) || !j[name].is_string()) return std::nullopt;
  return base64url_decode(j[name].get<std::string>());
}

}  // namespace

jwt_verifier::~jwt_verifier() = default;

result<std::unique_ptr<jwt_verifier>> jwt_verifier::open(const jwt_options& options) {
  std::ifstream in(options.jwks_file);
  if (!in) return fail(errc::not_found, fmt::format("cannot read JWKS file {}", options.jwks_file));
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("keys") || !j["keys"].is_array()) {
    return fail(errc::invalid,
                fmt::format("{}: not a JWKS document (an object with a \"keys\" array)",
                            options.jwks_file));
  }
  std::unique_ptr<jwt_verifier> v(new jwt_verifier());
  v->_options = options;
  size_t index = 0;
  for (const json& k : j["keys"]) {
    ++index;
    if (!k.is_object()) continue;
    auto entry = std::make_unique<key>();
    entry->kty = k.value("kty", "");
    entry->kid = k.value("kid", "");
    if (entry->kty == "RSA") {
      auto n = b64_field(k, "n"), e = b64_field(k, "e");
      if (n && e) entry->pkey = rsa_key(*n, *e);
    } else if (entry->kty == "EC" && k.value("crv", "") == "P-256") {
      auto x = b64_field(k, "x"), y = b64_field(k, "y");
      if (x && y) entry->pkey = p256_key(*x, *y);
    } else {
      continue;  // other key types are not ours to use
    }
    if (!entry->pkey) {
      return fail(errc::invalid,
                  fmt::format("{}: key {} ({}) is not a valid public key", options.jwks_file, index,
                              entry->kid.empty() ? entry->kty : entry->kid));
    }
    v->_keys.push_back(std::move(entry));
  }
  if (v->_keys.empty()) {
    return fail(errc::invalid,
                fmt::format("{}: no RSA or P-256 key in the key set", options.jwks_file));
  }
  return v;
}

result<principal> jwt_verifier::verify(std::string_view token, int64_t now_s) const {
  if (token.size() > api_limits::jwt_bytes_max) return fail(errc::too_large, "token too long");
  const size_t d1 = token.find('.');
  const size_t d2 = d1 == std::string_view::npos ? d1 : token.find('.', d1 + 1);
  if (d2 == std::string_view::npos || token.find('.', d2 + 1) != std::string_view::npos) {
    return fail(errc::invalid, "not a compact JWS");
  }
  auto header_text = base64url_decode(token.substr(0, d1));
  auto claims_text = base64url_decode(token.substr(d1 + 1, d2 - d1 - 1));
  auto sig = base64url_decode(token.substr(d2 + 1));
  if (!header_text || !claims_text || !sig) return fail(errc::invalid, "bad base64url");
  json header = json::parse(*header_text, nullptr, false);
  json claims = json::parse(*claims_text, nullptr, false);
  if (!header.is_object() || !claims.is_object()) return fail(errc::invalid, "bad JSON");
  const std::string alg = header.value("alg", "");
  std::string kty;
  if (alg == "RS256")
    kty = "RSA";
  else if (alg == "ES256")
    kty = "EC";
  else
    return fail(errc::invalid, "algorithm not accepted");
  const std::string kid = header.contains("kid") && header["kid"].is_string()
                              ? header["kid"].get<std::string>()
                              : std::string();
  const key* chosen = nullptr;
  size_t of_type = 0;
  for (const auto& k : _keys) {
    if (k->kty != kty) continue;
    ++of_type;
    if (!kid.empty() ? k->kid == kid : of_type == 1) chosen = k.get();
  }
  if (!chosen || (kid.empty() && of_type != 1)) return fail(errc::invalid, "no matching key");
  std::string signature = *sig;
  if (kty == "EC") {
    auto der = es256_der(*sig);
    if (!der) return fail(errc::invalid, "bad ES256 signature");
    signature = *der;
  }
  if (!verify_sha256(chosen->pkey, token.substr(0, d2), signature)) {
    return fail(errc::invalid, "signature does not verify");
  }
  // Claims.
  if (!claims.contains("exp") || !claims["exp"].is_number()) return fail(errc::invalid, "no exp");
  if (claims["exp"].get<double>() + api_limits::jwt_leeway_s <= double(now_s)) {
    return fail(errc::invalid, "expired");
  }
  if (claims.contains("nbf")) {
    if (!claims["nbf"].is_number()) return fail(errc::invalid, "bad nbf");
    if (claims["nbf"].get<double>() - api_limits::jwt_leeway_s > double(now_s)) {
      return fail(errc::invalid, "not yet valid");
    }
  }
  if (!_options.issuer.empty() &&
      !(claims.contains("iss") && claims["iss"] == json(_options.issuer))) {
    return fail(errc::invalid, "wrong issuer");
  }
  if (!_options.audience.empty()) {
    bool found = false;
    if (claims.contains("aud")) {
      const json& aud = claims["aud"];
      if (aud.is_string()) found = aud == json(_options.audience);
      if (aud.is_array()) {
        for (const json& a : aud) found = found || a == json(_options.audience);
      }
    }
    if (!found) return fail(errc::invalid, "wrong audience");
  }
  const json* tenant =
      claims.contains(_options.tenant_claim) ? &claims[_options.tenant_claim] : nullptr;
  const json* role = claims.contains(_options.role_claim) ? &claims[_options.role_claim] : nullptr;
  if (!tenant || !tenant->is_string() || !role || !role->is_string()) {
    return fail(errc::invalid, "no tenant or role claim");
  }
  principal p;
  p.tenant = tenant->get<std::string>();
  auto r = parse_role(role->get<std::string>());
  if (!r) return fail(errc::invalid, "unknown role");
  p.role = *r;
  if (p.tenant == any_tenant ? p.role != api_role::admin : !ids::valid_name(p.tenant)) {
    return fail(errc::invalid, "bad tenant claim");
  }
  const std::string sub = claims.contains("sub") && claims["sub"].is_string()
                              ? claims["sub"].get<std::string>()
                              : std::string();
  // The credential goes into record ids (1..128 bytes, no control characters): a subject that
  // does not fit is named by its hash.
  p.credential = "jwt:" + sub;
  if (sub.empty() || sub.size() > 64 || ids::record_id_problem(p.credential)) {
    p.credential = "jwt:sha256:" + hex(sha256(sub)).substr(0, 32);
  }
  return p;
}

}  // namespace auterity
