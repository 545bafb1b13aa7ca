#pragma once
// Who is calling: API keys (a file of hashes in the data directory) and JWT bearer tokens
// (RS256/ES256 against a JWKS file), both resolved to a principal — tenant, role, and the
// credential id that every command it writes is attributed to (api/README.md, "Auth").
//
// Key file <data>/api/keys.jsonl: one JSON object per line, appended, never rewritten —
//   {"op":"create","id":"k_...","tenant":"acme","role":"operator","sha256":"<hex>",
//    "name":"crm","at_ms":...}
//   {"op":"revoke","id":"k_...","at_ms":...}
// so the file is also the audit trail of who could act when. A key is shown once, at
// creation: "ak_<id>_<secret>" with 32 random bytes of secret; only SHA-256(secret) is kept (a
// random 256-bit secret needs no slow hash). Written by `auterity keys` while the engine runs;
// the server reads it again when it changes (api_limits::key_file_check_ms).
//
// Thread safety: key_store and jwt_verifier are safe to call from any thread.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/result.h"

namespace auterity {

enum class api_role : uint8_t { publisher, auditor, operator_, admin };
std::optional<api_role> parse_role(std::string_view name);
std::string_view role_name(api_role r);

// What a request may do. The tenant check comes first and answers "not found".
enum class api_action : uint8_t {
  start,    // publisher, operator, admin
  signal,   // publisher, operator, admin
  cancel,   // operator, admin
  publish,  // definitions and policy: operator, admin
  read,     // executions, timelines, events, definitions, policy, placement: auditor, operator,
            // admin
  move,     // a tenant's partition (docs/tenant-moves.md): admin only — it loads a partition
            // other tenants share, a deployment operator's decision rather than a tenant's
};
bool role_allows(api_role r, api_action a);

inline constexpr std::string_view any_tenant = "*";  // an admin key across tenants

struct principal {
  std::string tenant;  // any_tenant: every tenant (admin only)
  api_role role = api_role::auditor;
  // What commands are attributed to: "key:<id>" or "jwt:<sub>" (sub hashed if it does not fit
  // a record id). Also the rate limiter's bucket.
  std::string credential;
  bool may_access(std::string_view t) const { return tenant == any_tenant || tenant == t; }
};

struct key_entry {
  std::string id;
  std::string tenant;
  api_role role = api_role::auditor;
  std::string name;
  std::string sha256_hex;
  int64_t created_ms = 0;
  int64_t revoked_ms = 0;  // 0: live
};

// The key file: creation and revocation (the CLI), lookup (the server).
class key_store {
 public:
  explicit key_store(std::string path);
  static std::string default_path(const std::string& data_dir);  // <data>/api/keys.jsonl

  // Appends a new key and returns the secret text "ak_<id>_<secret>" (shown once).
  result<std::string> create(std::string_view tenant, api_role role, std::string_view name,
                             int64_t now_ms);
  result<void> revoke(std::string_view id, int64_t now_ms);  // not_found if no such live key
  result<std::vector<key_entry>> list();

  // The principal of a presented key, or nullopt (unknown, revoked, malformed). Reloads the
  // file if it changed: looked at every key_file_check_ms, and at once for a key id not
  // known yet.
  std::optional<principal> authenticate(std::string_view presented);
  // A key known only to this process (not in the file): the local CLI's admin key.
  std::string add_ephemeral(std::string_view tenant, api_role role, std::string_view id);

 private:
  result<void> load_locked();
  void maybe_reload_locked(bool force);
  std::string _path;
  std::mutex _mu;
  std::map<std::string, key_entry, std::less<>> _keys;  // by id
  std::map<std::string, key_entry, std::less<>> _ephemeral;
  std::chrono::steady_clock::time_point _checked{};
  int64_t _mtime_ns = -1;
  int64_t _size = -1;
};

struct jwt_options {
  std::string jwks_file;  // {"keys":[{"kty":"RSA","kid":..,"n":..,"e":..} | {"kty":"EC",...}]}
  std::string issuer;     // required "iss"; empty: not checked
  std::string audience;   // required in "aud" (string or array); empty: not checked
  std::string tenant_claim = "tenant";
  std::string role_claim = "role";
};

// Verifies compact JWS tokens signed RS256 (RSA PKCS#1 v1.5, SHA-256) or ES256 (ECDSA P-256,
// SHA-256) with OpenSSL's EVP API against the keys of a JWKS file, chosen by "kid" (or the
// only key of the right type if the token names none). Checks exp (required), nbf, iss and
// aud with jwt_leeway_s of skew. "alg":"none" and HMAC algorithms are refused.
class jwt_verifier {
 public:
  static result<std::unique_ptr<jwt_verifier>> open(const jwt_options& options);
  ~jwt_verifier();
  // The principal, or errc::invalid with why (for the server's log, not the client).
  result<principal> verify(std::string_view token, int64_t now_s) const;

 private:
  struct key;
  jwt_verifier() = default;
  jwt_options _options;
  std::vector<std::unique_ptr<key>> _keys;
};

// base64url without padding (RFC 4648 section 5), as JWS uses it.
std::string base64url_encode(std::string_view bytes);
std::optional<std::string> base64url_decode(std::string_view text);

}  // namespace auterity
