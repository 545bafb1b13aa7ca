// The HTTP API against a real engine on the embedded log (label api): every endpoint, roles,
// the cross-tenant matrix, API keys and JWTs, rate limits, bad HTTP, and event streams.

#include <fstream>
#include <regex>
#include <set>

#include "api/limits.h"
#include "api/tests/api_test_util.h"
#include "processors/client.h"
#include "processors/execution_state.h"
#include "replay/source.h"

namespace auterity::api_test {
namespace {

TEST(api, a_new_user_publishes_starts_follows_signals_and_reads_the_timeline) {
  engine_with_api e;
  const std::string op = e.key("acme", "operator");
  // Unauthenticated: 401 with a challenge, as problem+json.
  auto anon = e.call("GET", "/v1/tenants/acme/executions", "");
  EXPECT_EQ(anon.status, 401);
  EXPECT_EQ(anon.content_type, "application/problem+json");
  EXPECT_EQ(anon.header("www-authenticate"), "Bearer realm=\"auterity\"");
  EXPECT_EQ(e.call("GET", "/v1/health", "").status, 200);
  EXPECT_EQ(e.call("GET", "/v1/ready", "").status, 200);
  EXPECT_EQ(e.call("GET", "/v1/openapi.json", "").j()["openapi"], "3.0.3");

  auto pub = e.call("POST", "/v1/tenants/acme/definitions?wait_ms=10000", op,
                    json{{"definition", json::parse(waits_definition)}}.dump());
  ASSERT_EQ(pub.status, 201) << pub.body;
  EXPECT_EQ(pub.j()["version"], 1);
  EXPECT_EQ(pub.header("location"), "/v1/tenants/acme/definitions/waits/versions/1");
  // The same version with other content: a conflict, with the engine's rejection.
  auto conflict = e.call("POST", "/v1/tenants/acme/definitions?wait_ms=10000", op,
                         R"({"definition":{"workflow":"waits","version":1,"steps":[
                             {"id":"x","kind":"task","action":"transform"}]}})");
  EXPECT_EQ(conflict.status, 409) << conflict.body;
  EXPECT_EQ(conflict.j()["rejection"]["name"], "version_conflict");
  EXPECT_EQ(conflict.j()["rejection"]["code"], 13);

  // Start without waiting: 202 and where to look.
  const std::string start_body = json{
      {"execution_id", "lead-1"},
      {"workflow", "waits"},
      {"input", {{"name", "Maria"}}}}.dump();
  auto s = e.call("POST", "/v1/tenants/acme/executions", op, start_body);
  ASSERT_EQ(s.status, 202) << s.body;
  EXPECT_EQ(s.header("location"), "/v1/tenants/acme/executions/lead-1");
  EXPECT_EQ(s.j()["outcome"], "pending");
  // The same start again, waiting: idempotent, it finds its execution.
  auto again = e.call("POST", "/v1/tenants/acme/executions?wait_ms=10000", op, start_body);
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(again.j()["duplicate"], true);
  // The same id with another input is a conflict, not a silent success.
  auto other =
      e.call("POST", "/v1/tenants/acme/executions?wait_ms=10000", op,
             json{{"execution_id", "lead-1"}, {"workflow", "waits"}, {"input", {{"name", "Other"}}}}
                 .dump());
  EXPECT_EQ(other.status, 409) << other.body;
  EXPECT_EQ(other.j()["rejection"]["name"], "duplicate_execution");
  // A rejection says why, with the stable name and code.
  auto bad = e.call("POST", "/v1/tenants/acme/executions?wait_ms=10000", op,
                    R"({"execution_id":"lead-2","workflow":"nope"})");
  EXPECT_EQ(bad.status, 422) << bad.body;
  EXPECT_EQ(bad.content_type, "application/problem+json");
  EXPECT_EQ(bad.j()["rejection"]["name"], "unknown_workflow");
  EXPECT_EQ(bad.j()["rejection"]["code"], 2);

  auto ex = e.call("GET", "/v1/tenants/acme/executions/lead-1", op);
  ASSERT_EQ(ex.status, 200) << ex.body;
  EXPECT_EQ(ex.j()["status"], "running");
  EXPECT_EQ(ex.j()["running_steps"], json::array({"w"}));
  EXPECT_EQ(ex.j()["input"]["name"], "Maria");

  auto sig = e.call("POST", "/v1/tenants/acme/executions/lead-1/signals?wait_ms=10000", op,
                    R"({"name":"go","payload":{"text":"Saturday 10am?"}})");
  ASSERT_EQ(sig.status, 200) << sig.body;
  for (int i = 0;
       i < 100 &&
       e.call("GET", "/v1/tenants/acme/executions/lead-1", op).j()["status"] != "succeeded";
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ex = e.call("GET", "/v1/tenants/acme/executions/lead-1", op);
  EXPECT_EQ(ex.j()["status"], "succeeded") << ex.body;
  EXPECT_EQ(ex.j()["output"]["w"]["text"], "Saturday 10am?") << ex.body;
  auto late = e.call("POST", "/v1/tenants/acme/executions/lead-1/cancel?wait_ms=10000", op, "");
  EXPECT_EQ(late.status, 409) << late.body;
  EXPECT_EQ(late.j()["rejection"]["name"], "execution_finished");

  // Every change is attributed: the events' causation names the key that asked.
  const std::string key_id = op.substr(3, op.find('_', 3) - 3);
  auto tl = e.call("GET", "/v1/tenants/acme/executions/lead-1/timeline", op);
  ASSERT_EQ(tl.status, 200) << tl.body;
  std::set<std::string> types;
  const json timeline = tl.j();
  for (const json& ev : timeline["events"]) {
    types.insert(ev["type"].get<std::string>());
    if (ev["type"] == "ExecutionStarted" || ev["type"] == "SignalReceived") {
      EXPECT_TRUE(ev["causation_id"].get<std::string>().starts_with("api:key:" + key_id + ":"))
          << ev.dump();
    }
  }
  EXPECT_TRUE(types.contains("ExecutionStarted") && types.contains("SignalReceived") &&
              types.contains("ExecutionSucceeded"))
      << tl.body;
  auto html = e.call("GET", "/v1/tenants/acme/executions/lead-1/timeline.html", op);
  EXPECT_EQ(html.status, 200);
  EXPECT_EQ(html.content_type, "text/html; charset=utf-8");
  EXPECT_NE(html.body.find("lead-1"), std::string::npos);

  auto defs = e.call("GET", "/v1/tenants/acme/definitions", op);
  EXPECT_EQ(defs.j()["definitions"][0]["workflow"], "waits");
  EXPECT_EQ(e.call("GET", "/v1/tenants/acme/definitions/waits", op).j()["latest"], 1);
  auto v1 = e.call("GET", "/v1/tenants/acme/definitions/waits/versions/1", op);
  EXPECT_EQ(v1.j()["definition"]["steps"][0]["id"], "w") << v1.body;
  EXPECT_EQ(e.call("GET", "/v1/tenants/acme/definitions/waits/versions/2", op).status, 404);
  EXPECT_EQ(e.call("GET", "/v1/tenants/acme/policy", op).status, 404);
  auto pol = e.call("PUT", "/v1/tenants/acme/policy?wait_ms=10000", op, "{}");
  EXPECT_TRUE(pol.status == 200 || pol.status == 422) << pol.body;
}

// A tenant moved through the API (docs/tenant-moves.md; admin only) by a running engine: the
// move's decision and refusals in the engine's words, its placement while and after it moves;
// then it is read where it lives now: its executions, its whole timeline (events from before the
// move, on the old partition, and after it), and a signal sent through the API reaches the
// execution on its new partition.
TEST(api, reads_follow_a_moved_tenant) {
  engine_with_api e;
  const std::string op = e.key("acme", "operator");
  ASSERT_EQ(e.call("POST", "/v1/tenants/acme/definitions?wait_ms=10000", op,
                   json{{"definition", json::parse(waits_definition)}}.dump())
                .status,
            201);
  auto s = e.call("POST", "/v1/tenants/acme/executions?wait_ms=10000", op,
                  R"({"execution_id":"lead-1","workflow":"waits"})");
  ASSERT_EQ(s.status, 201) << s.body;
  const uint32_t home = tenant_partition("acme", e.engine().partitions());
  const uint32_t to = (home + 1) % e.engine().partitions();
  const std::string admin = e.key("acme", "admin");
  auto placed = e.call("GET", "/v1/tenants/acme/placement", op);
  ASSERT_EQ(placed.status, 200) << placed.body;
  EXPECT_EQ(placed.j()["partition"], home);
  EXPECT_EQ(placed.j()["epoch"], 0);
  // Refused by the engine, with its words: a partition that does not exist.
  auto refused = e.call("POST", "/v1/tenants/acme/move?wait_ms=10000", admin, R"({"to":99})");
  ASSERT_EQ(refused.status, 422) << refused.body;
  EXPECT_EQ(refused.j()["rejection"]["name"], "invalid_move") << refused.body;
  EXPECT_NE(refused.j()["rejection"]["reason"].get<std::string>().find("does not exist"),
            std::string::npos)
      << refused.body;
  auto moving =
      e.call("POST", "/v1/tenants/acme/move?wait_ms=10000", admin, json{{"to", to}}.dump());
  ASSERT_EQ(moving.status, 200) << moving.body;
  EXPECT_EQ(moving.j()["outcome"], "accepted");
  EXPECT_EQ(moving.j()["to"], to);
  EXPECT_EQ(moving.j()["epoch"], 1);
  EXPECT_EQ(moving.j()["running_executions"], 1);
  EXPECT_EQ(moving.header("location"), "/v1/tenants/acme/placement");
  // Settled once the target installed the state (the source forgets it in its move commit).
  json settled;
  for (int i = 0; i < 200; ++i) {
    settled = e.call("GET", "/v1/tenants/acme/placement", op).j();
    if (settled["partition"] == to && settled["moving"] == false) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  ASSERT_EQ(settled["partition"], to) << settled.dump();
  ASSERT_EQ(settled["moving"], false) << settled.dump();
  EXPECT_EQ(settled["home"], home);
  EXPECT_EQ(settled["epoch"], 1);
  EXPECT_EQ(settled["path"], json::array({home, to}));
  bool stored = false;
  e.engine().with_store(to, [&](const state_store& st) {
    auto v = st.get(keys::execution("acme", "lead-1"));
    stored = v && *v;
  });
  ASSERT_TRUE(stored) << "the target holds the moved execution";
  // Moving it again to where it is: refused.
  auto again =
      e.call("POST", "/v1/tenants/acme/move?wait_ms=10000", admin, json{{"to", to}}.dump());
  ASSERT_EQ(again.status, 422) << again.body;
  EXPECT_NE(again.j()["rejection"]["reason"].get<std::string>().find("already on partition"),
            std::string::npos)
      << again.body;
  auto ex = e.call("GET", "/v1/tenants/acme/executions/lead-1", op);
  ASSERT_EQ(ex.status, 200) << ex.body;
  EXPECT_EQ(ex.j()["status"], "running");
  auto sig = e.call("POST", "/v1/tenants/acme/executions/lead-1/signals?wait_ms=10000", op,
                    R"({"name":"go","payload":{"ok":true}})");
  ASSERT_EQ(sig.status, 200) << sig.body;
  for (int i = 0;
       i < 100 &&
       e.call("GET", "/v1/tenants/acme/executions/lead-1", op).j()["status"] != "succeeded";
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  auto tl = e.call("GET", "/v1/tenants/acme/executions/lead-1/timeline", op);
  ASSERT_EQ(tl.status, 200) << tl.body;
  std::map<std::string, uint32_t> partition_of_type;
  const json timeline = tl.j();
  for (const json& ev : timeline["events"]) {
    partition_of_type[ev["type"].get<std::string>()] = ev["partition"].get<uint32_t>();
  }
  ASSERT_TRUE(partition_of_type.contains("ExecutionStarted")) << tl.body;
  ASSERT_TRUE(partition_of_type.contains("ExecutionSucceeded")) << tl.body;
  EXPECT_EQ(partition_of_type["ExecutionStarted"], home) << tl.body;
  EXPECT_EQ(partition_of_type["SignalReceived"], to) << tl.body;
  EXPECT_EQ(partition_of_type["ExecutionSucceeded"], to) << tl.body;
}

TEST(api, lists_filter_and_page_with_a_cursor) {
  engine_with_api e;
  const std::string op = e.key("acme", "operator");
  e.seed("acme", "x-00");
  for (int i = 1; i < 7; ++i) {
    auto s =
        e.call("POST", "/v1/tenants/acme/executions?wait_ms=10000", op,
               json{{"execution_id", fmt::format("x-{:02}", i)}, {"workflow", "waits"}}.dump());
    ASSERT_EQ(s.status, 201);
  }
  e.call("POST", "/v1/tenants/acme/executions/x-03/cancel?wait_ms=10000", op, "");
  std::vector<std::string> seen;
  std::string cursor;
  for (int page = 0; page < 10; ++page) {
    auto r = e.call("GET",
                    "/v1/tenants/acme/executions?status=running&limit=2" +
                        (cursor.empty() ? "" : "&cursor=" + cursor),
                    op);
    ASSERT_EQ(r.status, 200) << r.body;
    const json page_body = r.j();
    for (const json& x : page_body["executions"]) seen.push_back(x["execution_id"]);
    if (r.j()["next_cursor"].is_null()) break;
    cursor = r.j()["next_cursor"];
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"x-00", "x-01", "x-02", "x-04", "x-05", "x-06"}));
  auto cancelled = e.call("GET", "/v1/tenants/acme/executions?status=cancelled", op);
  EXPECT_EQ(cancelled.j()["executions"].size(), 1u);
  EXPECT_EQ(e.call("GET", "/v1/tenants/acme/executions?workflow=none", op).j()["executions"].size(),
            0u);
  EXPECT_EQ(e.call("GET", "/v1/tenants/acme/executions?started_after=4000000000000", op)
                .j()["executions"]
                .size(),
            0u);
  EXPECT_EQ(e.call("GET", "/v1/tenants/acme/executions?limit=0", op).status, 400);
  EXPECT_EQ(e.call("GET", "/v1/tenants/acme/executions?status=weird", op).status, 400);
}

// Every endpoint, every role of tenant A, against tenant B's real resources and against a
// tenant that does not exist: the same answer, byte for byte, and nothing of B changes.
TEST(api, a_credential_of_one_tenant_learns_nothing_of_another) {
  engine_with_api e;
  e.seed("tenant-b", "b-1");
  auto pol = e.call("PUT", "/v1/tenants/tenant-b/policy?wait_ms=10000",
                    e.key("tenant-b", "operator"), "{}");
  const std::string b_auditor = e.key("tenant-b", "auditor");
  const json b_before = e.call("GET", "/v1/tenants/tenant-b/executions/b-1", b_auditor).j();
  ASSERT_EQ(b_before["status"], "running");
  struct endpoint {
    std::string method, path, body;
  };
  auto endpoints = [](const std::string& t) {
    const std::string x = "/v1/tenants/" + t;
    return std::vector<endpoint>{
        {"GET", x + "/definitions", ""},
        {"POST", x + "/definitions?wait_ms=3000",
         json{{"definition", json::parse(waits_definition)}}.dump()},
        {"GET", x + "/definitions/waits", ""},
        {"GET", x + "/definitions/waits/versions/1", ""},
        {"GET", x + "/policy", ""},
        {"PUT", x + "/policy?wait_ms=3000", "{}"},
        {"GET", x + "/executions", ""},
        {"GET", x + "/executions?status=running&workflow=waits", ""},
        {"POST", x + "/executions?wait_ms=3000", R"({"execution_id":"b-1","workflow":"waits"})"},
        {"POST", x + "/executions", R"({"execution_id":"b-2","workflow":"waits"})"},
        {"GET", x + "/executions/b-1", ""},
        {"POST", x + "/executions/b-1/signals?wait_ms=3000", R"({"name":"go"})"},
        {"POST", x + "/executions/b-1/cancel?wait_ms=3000", "{}"},
        {"GET", x + "/executions/b-1/timeline", ""},
        {"GET", x + "/executions/b-1/timeline.html", ""},
        {"GET", x + "/executions/b-1/events", ""},
        {"GET", x + "/executions/nope", ""},
        {"GET", x + "/placement", ""},
        {"POST", x + "/move?wait_ms=3000", R"({"to":1})"},
    };
  };
  const auto to_b = endpoints("tenant-b");
  const auto to_ghost = endpoints("tenant-ghost");
  size_t checked = 0;
  for (const char* role : {"publisher", "auditor", "operator", "admin"}) {
    const std::string key = e.key("tenant-a", role);
    for (size_t i = 0; i < to_b.size(); ++i) {
      auto rb = e.call(to_b[i].method, to_b[i].path, key, to_b[i].body);
      auto rg = e.call(to_ghost[i].method, to_ghost[i].path, key, to_ghost[i].body);
      EXPECT_EQ(rb.status, 404) << role << " " << to_b[i].method << " " << to_b[i].path;
      EXPECT_EQ(rb.status, rg.status) << role << " " << to_b[i].path;
      EXPECT_EQ(rb.body, rg.body) << role << " " << to_b[i].path;
      EXPECT_EQ(rb.headers.size(), rg.headers.size()) << role << " " << to_b[i].path;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 4 * to_b.size());
  // Nothing of B changed: the execution still waits with the same events, no b-2 exists.
  const json b_after = e.call("GET", "/v1/tenants/tenant-b/executions/b-1", b_auditor).j();
  EXPECT_EQ(b_after, b_before);
  EXPECT_EQ(e.call("GET", "/v1/tenants/tenant-b/executions/b-2", b_auditor).status, 404);
  EXPECT_EQ(e.call("GET", "/v1/tenants/tenant-b/definitions/waits", b_auditor).j()["versions"],
            json::array({1}));
  // The control: the same walk with an admin of every tenant does reach B.
  const std::string root = e.key("*", "admin");
  EXPECT_EQ(e.call("GET", "/v1/tenants/tenant-b/executions/b-1", root).status, 200);
  EXPECT_EQ(
      e.call("GET", "/v1/tenants/tenant-b/executions/b-1", e.key("tenant-b", "auditor")).status,
      200);
}

TEST(api, roles_limit_what_a_credential_does_in_its_own_tenant) {
  engine_with_api e;
  e.seed("acme", "r-1");
  const std::string publisher = e.key("acme", "publisher"), auditor = e.key("acme", "auditor"),
                    op = e.key("acme", "operator");
  auto status = [&](const std::string& key, std::string_view m, const std::string& path,
                    const std::string& body = "") { return e.call(m, path, key, body).status; };
  const std::string x = "/v1/tenants/acme";
  // publisher: start and signal only.
  EXPECT_EQ(
      status(publisher, "POST", x + "/executions", R"({"execution_id":"r-2","workflow":"waits"})"),
      202);
  EXPECT_EQ(status(publisher, "POST", x + "/executions/r-1/signals", R"({"name":"other"})"), 202);
  EXPECT_EQ(status(publisher, "GET", x + "/executions/r-1"), 403);
  EXPECT_EQ(status(publisher, "POST", x + "/executions/r-1/cancel", "{}"), 403);
  EXPECT_EQ(status(publisher, "POST", x + "/definitions", "{}"), 403);
  // auditor: reads only.
  EXPECT_EQ(status(auditor, "GET", x + "/executions/r-1"), 200);
  EXPECT_EQ(status(auditor, "GET", x + "/executions/r-1/timeline"), 200);
  EXPECT_EQ(status(auditor, "GET", x + "/definitions"), 200);
  EXPECT_EQ(
      status(auditor, "POST", x + "/executions", R"({"execution_id":"r-3","workflow":"waits"})"),
      403);
  EXPECT_EQ(status(auditor, "POST", x + "/executions/r-1/signals", R"({"name":"go"})"), 403);
  EXPECT_EQ(status(auditor, "PUT", x + "/policy", "{}"), 403);
  EXPECT_EQ(status(auditor, "GET", x + "/placement"), 200);
  // operator: everything of its tenant but moving it (a deployment's decision: admin).
  EXPECT_EQ(status(op, "POST", x + "/executions/r-1/cancel", "{}"), 202);
  EXPECT_EQ(status(op, "PUT", x + "/policy", "{}"), 202);
  EXPECT_EQ(status(op, "POST", x + "/move", R"({"to":0})"), 403);
  EXPECT_EQ(status(publisher, "POST", x + "/move", R"({"to":0})"), 403);
  // Wrong method: 405 with Allow.
  auto m = e.call("DELETE", x + "/executions/r-1", op);
  EXPECT_EQ(m.status, 405);
  EXPECT_EQ(m.header("allow"), "GET");
}

TEST(api, revoked_keys_and_bad_tokens_are_refused) {
  signing_key rsa(false, "rsa-1"), ec(true, "ec-1"), stranger(false, "rsa-1");
  const std::string jwks = (std::filesystem::temp_directory_path() /
                            fmt::format("auterity-api-jwks-{}.json", ::getpid()))
                               .string();
  { std::ofstream(jwks) << json{{"keys", {rsa.jwk(), ec.jwk()}}}.dump(); }
  api_options o;
  o.jwt = jwt_options{jwks, "https://idp.example", "auterity", "tenant", "role"};
  engine_with_api e(o);
  e.seed("acme", "j-1");
  const int64_t now = wall_now_ms() / 1000;
  json claims = {{"iss", "https://idp.example"}, {"aud", "auterity"},
                 {"sub", "alice@crm"},           {"tenant", "acme"},
                 {"role", "operator"},           {"exp", now + 300}};
  const std::string path = "/v1/tenants/acme/executions/j-1";
  EXPECT_EQ(e.call("GET", path, rsa.sign(claims)).status, 200);
  EXPECT_EQ(e.call("GET", path, ec.sign(claims)).status, 200);
  json aud_list = claims;
  aud_list["aud"] = {"other", "auterity"};
  EXPECT_EQ(e.call("GET", path, ec.sign(aud_list)).status, 200);
  auto refused = [&](json c, const signing_key& k, std::string alg = "") {
    return e.call("GET", path, k.sign(c, alg)).status;
  };
  json expired = claims, early = claims, wrong_aud = claims, wrong_iss = claims, no_exp = claims,
       other_tenant = claims, bad_role = claims;
  expired["exp"] = now - 120;
  early["nbf"] = now + 600;
  wrong_aud["aud"] = "someone-else";
  wrong_iss["iss"] = "https://evil.example";
  no_exp.erase("exp");
  other_tenant["tenant"] = "globex";
  bad_role["role"] = "root";
  EXPECT_EQ(refused(expired, rsa), 401);
  EXPECT_EQ(refused(early, rsa), 401);
  EXPECT_EQ(refused(wrong_aud, ec), 401);
  EXPECT_EQ(refused(wrong_iss, rsa), 401);
  EXPECT_EQ(refused(no_exp, rsa), 401);
  EXPECT_EQ(refused(bad_role, rsa), 401);
  EXPECT_EQ(refused(claims, stranger), 401);      // forged: same kid, another key
  EXPECT_EQ(refused(claims, rsa, "ES256"), 401);  // algorithm confusion
  EXPECT_EQ(refused(other_tenant, rsa), 404);     // valid, but for another tenant
  // alg none and HS256 with the public key as secret: refused.
  const std::string body = base64url_encode(claims.dump());
  EXPECT_EQ(e.call("GET", path, base64url_encode(R"({"alg":"none"})") + "." + body + ".").status,
            401);
  EXPECT_EQ(
      e.call("GET", path, base64url_encode(R"({"alg":"HS256","kid":"rsa-1"})") + "." + body + ".x")
          .status,
      401);
  // A start with a token is attributed to its subject.
  auto s = e.call("POST", "/v1/tenants/acme/executions?wait_ms=10000", rsa.sign(claims),
                  R"({"execution_id":"j-2","workflow":"waits"})");
  ASSERT_EQ(s.status, 201) << s.body;
  EXPECT_TRUE(s.j()["request_id"].get<std::string>().starts_with("api:jwt:alice@crm:"));

  // Keys: a revoked key stops working within key_file_check_ms.
  const std::string k = e.key("acme", "auditor");
  EXPECT_EQ(e.call("GET", path, k).status, 200);
  key_store ks(key_store::default_path(e.dir()));
  ASSERT_TRUE(ks.revoke(k.substr(3, k.find('_', 3) - 3), wall_now_ms()));
  // key_file_check_ms after the revoke the server looks again; on a loaded machine its look
  // may come later, so allow ten periods.
  int after_revoke = 0;
  for (int i = 0; i < 10 && after_revoke != 401; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(api_limits::key_file_check_ms + 100));
    after_revoke = e.call("GET", path, k).status;
  }
  EXPECT_EQ(after_revoke, 401);
  std::string tampered = e.key("acme", "auditor");
  tampered.back() = tampered.back() == '0' ? '1' : '0';
  EXPECT_EQ(e.call("GET", path, tampered).status, 401);
  // Only hashes are stored.
  std::ifstream in(key_store::default_path(e.dir()));
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(file.find(k.substr(k.rfind('_') + 1)), std::string::npos);
  std::filesystem::remove(jwks);
}

TEST(api, a_credential_over_its_rate_gets_429_with_retry_after) {
  api_options o;
  o.rate_per_s = 2;
  o.rate_burst = 5;
  engine_with_api e(o);
  const std::string k = e.key("acme", "auditor"), other = e.key("acme", "auditor");
  int ok = 0;
  reply last;
  for (int i = 0; i < 8; ++i) {
    last = e.call("GET", "/v1/tenants/acme/executions", k);
    if (last.status == 200) ++ok;
  }
  EXPECT_EQ(ok, 5);
  EXPECT_EQ(last.status, 429);
  EXPECT_EQ(last.header("retry-after"), "1");
  EXPECT_EQ(e.call("GET", "/v1/tenants/acme/executions", other).status, 200);  // its own bucket
}

TEST(api, bad_http_gets_a_4xx_or_a_closed_connection_and_never_stalls_the_server) {
  engine_with_api e;
  const std::string op = e.key("acme", "operator");
  const uint16_t port = e.port();
  auto status_of = [](const std::string& raw) {
    std::smatch m;
    return std::regex_search(raw, m, std::regex("^HTTP/1\\.1 (\\d{3})")) ? std::stoi(m[1]) : 0;
  };
  EXPECT_EQ(status_of(raw_exchange(port, "GARBAGE\r\n\r\n")), 400);
  EXPECT_EQ(status_of(raw_exchange(port, "GET /v1/health HTTP/9.9\r\n\r\n")), 400);
  EXPECT_EQ(status_of(raw_exchange(
                port, fmt::format("POST /v1/tenants/acme/executions HTTP/1.1\r\nHost: x\r\n"
                                  "Authorization: Bearer {}\r\nContent-Type: application/json\r\n"
                                  "Content-Length: {}\r\n\r\n",
                                  op, api_limits::body_bytes_max + 1))),
            413);
  EXPECT_EQ(status_of(raw_exchange(port, "GET /v1/health HTTP/1.1\r\nX-Big: " +
                                             std::string(api_limits::header_bytes_max, 'a') +
                                             "\r\n\r\n")),
            431);
  EXPECT_EQ(
      e.call("POST", "/v1/tenants/acme/executions", op, "execution_id=x", "text/plain").status,
      415);
  EXPECT_EQ(e.call("POST", "/v1/tenants/acme/executions", op, "{\"execution_id\":").status, 400);
  EXPECT_EQ(e.call("POST", "/v1/tenants/acme/executions", op, "[1,2]").status, 400);
  const std::string deep = std::string(200, '[') + std::string(200, ']');
  auto d = e.call("POST", "/v1/tenants/acme/executions", op,
                  R"({"execution_id":"d","workflow":"w","input":{"a":)" + deep + "}}");
  EXPECT_EQ(d.status, 400);
  EXPECT_NE(d.j()["detail"].get<std::string>().find("json_depth_max"), std::string::npos);
  EXPECT_EQ(
      e.call("POST", "/v1/tenants/acme/executions", op, R"({"execution_id":"a b","workflow":"w"})")
          .status,
      400);
  EXPECT_EQ(e.call("POST", "/v1/tenants/acme/executions", op,
                   R"({"execution_id":"ok","workflow":"w","extra":1})")
                .status,
            400);
  EXPECT_EQ(e.call("GET", "/v1/tenants/acme/executions/%ZZ", op).status, 404);
  EXPECT_EQ(e.call("GET", "/v2/anything", op).status, 404);

  // Slowloris: many connections trickle a request; the server keeps answering others at once
  // and closes the slow ones after request_read_ms_max.
  std::vector<int> slow;
  for (int i = 0; i < 50; ++i) {
    int fd = connect_to(port);
    ASSERT_GE(fd, 0);
    (void)::send(fd, "GET /v1/health HTTP/1.1\r\nHost: x\r\n", 34, MSG_NOSIGNAL);
    slow.push_back(fd);
  }
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(e.call("GET", "/v1/health", "").status, 200);
  // Well before the slow ones' deadline (request_read_ms_max, 10 s), even on a loaded machine.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  for (int fd : slow) {
    (void)::send(fd, "X-Slow: 1\r\n", 11, MSG_NOSIGNAL);
  }
  // Each slow connection is closed by the deadline (read returns 0: no answer, closed).
  for (int fd : slow) {
    const std::string got = read_all(fd, int(api_limits::request_read_ms_max) + 5000);
    EXPECT_EQ(got, "");
    ::close(fd);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0,
            std::chrono::milliseconds(api_limits::request_read_ms_max + 5000));
  EXPECT_EQ(e.call("GET", "/v1/health", "").status, 200);
}

TEST(api, https_with_a_certificate_and_plain_http_on_it_refused) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / fmt::format("auterity-api-tls-{}", ::getpid()))
          .string();
  std::filesystem::create_directories(dir);
  const std::string cert = dir + "/cert.pem", key = dir + "/key.pem";
  ASSERT_EQ(std::system(fmt::format("openssl req -x509 -newkey ec -pkeyopt "
                                    "ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -addext "
                                    "subjectAltName=IP:127.0.0.1 -days 1 -keyout {} -out {} "
                                    ">/dev/null 2>&1",
                                    key, cert)
                            .c_str()),
            0);
  api_options o;
  o.http.tls_cert_file = cert;
  o.http.tls_key_file = key;
  engine_with_api e(o);
  e.scheme = "https";
  e.tls.ca_file = cert;
  e.seed("acme", "t-1");
  auto r = e.call("GET", "/v1/tenants/acme/executions/t-1", e.key("acme", "auditor"));
  EXPECT_EQ(r.status, 200) << r.body;
  // Plain HTTP on the TLS port: no answer, the connection is closed (no stuck thread).
  const std::string plain = raw_exchange(e.port(), "GET /v1/health HTTP/1.1\r\n\r\n", 5000);
  EXPECT_EQ(plain.find("HTTP/1.1 200"), std::string::npos);
  EXPECT_EQ(e.call("GET", "/v1/health", "").status, 200);
  // An untrusted client fails its handshake; the server is unharmed.
  e.tls.ca_file.clear();
  EXPECT_EQ(e.call("GET", "/v1/health", "").status, -1);
  api_options broken;
  broken.http.tls_cert_file = cert;  // no key
  EXPECT_THROW(engine_with_api{broken}, std::runtime_error);
  std::filesystem::remove_all(dir);
}

// Reads an event stream until `until` is seen in it or the server closes it.
std::vector<std::pair<int64_t, std::string>> read_events(uint16_t port, const std::string& path,
                                                         const std::string& key,
                                                         const std::string& last_id, int timeout_ms,
                                                         bool& ended) {
  int fd = connect_to(port);
  std::string req =
      fmt::format("GET {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n", path, key);
  if (!last_id.empty()) req += "Last-Event-ID: " + last_id + "\r\n";
  req += "\r\n";
  (void)::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  const std::string text = read_all(fd, timeout_ms);
  ::close(fd);
  std::vector<std::pair<int64_t, std::string>> out;
  std::regex ev("id: (\\d+)\nevent: (\\w+)\ndata: ");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), ev); it != std::sregex_iterator();
       ++it) {
    out.emplace_back(std::stoll((*it)[1]), (*it)[2]);
  }
  ended = text.find("event: end\n") != std::string::npos;
  return out;
}

TEST(api, an_event_stream_resumes_after_a_dropped_connection_with_last_event_id) {
  engine_with_api e;
  e.seed("acme", "s-1");
  const std::string op = e.key("acme", "operator");
  const std::string path = "/v1/tenants/acme/executions/s-1/events";
  bool ended = false;
  // First connection: what happened so far, then the client drops it.
  auto first = read_events(e.port(), path, op, "", 700, ended);
  ASSERT_FALSE(first.empty());
  EXPECT_FALSE(ended);
  EXPECT_EQ(first.front(), (std::pair<int64_t, std::string>{0, "ExecutionStarted"}));
  ASSERT_EQ(e.call("POST", "/v1/tenants/acme/executions/s-1/signals?wait_ms=10000", op,
                   R"({"name":"go"})")
                .status,
            200);
  // Resume: only what came after, to the end.
  auto rest = read_events(e.port(), path, op, std::to_string(first.back().first), 10000, ended);
  EXPECT_TRUE(ended);
  ASSERT_FALSE(rest.empty());
  EXPECT_EQ(rest.front().first, first.back().first + 1);
  std::vector<std::pair<int64_t, std::string>> all = first;
  all.insert(all.end(), rest.begin(), rest.end());
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].first, int64_t(i));
  EXPECT_EQ(all.back().second, "ExecutionSucceeded");
  const json ex = e.call("GET", "/v1/tenants/acme/executions/s-1", op).j();
  EXPECT_EQ(ex["events"], all.size());
  EXPECT_EQ(e.call("GET", path, op, "", "application/json", {{"Last-Event-ID", "x"}}).status, 400);
}

}  // namespace
}  // namespace auterity::api_test
