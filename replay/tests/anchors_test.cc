// Anchored chain heads (docs/anchors.md) against a consistent rewrite. A real engine run writes
// signed anchors; on a copy of its data directory one execution's input is edited ("Maria" ->
// "Mario") and everything an attacker would fix is fixed: every later event of that execution
// gets the new prev_hash, every touched frame its crc32c, and the state is rebuilt from the
// rewritten log by the engine itself. Every check inside the directory then passes — the test
// asserts that first — and only the anchors kept elsewhere catch it: `replay verify --anchors`
// reports the rewritten partition and `run --verify-on-start` refuses to start.

#include <sys/wait.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include <fmt/core.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "engine/crc32c.h"
#include "engine/record.h"
#include "replay/tests/history_file.h"

namespace auterity::testing {
namespace {

namespace fs = std::filesystem;

struct outcome {
  int code = -1;
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void spit(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

outcome run_cli(const std::string& args, const std::string& err_file) {
  const std::string cmd = fmt::format("'{}' {} 2>'{}'", AUTERITY_BIN, args, err_file);
  outcome o;
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return o;
  char buf[8192];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) o.out.append(buf, n);
  const int status = ::pclose(p);
  o.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  o.err = slurp(err_file);
  return o;
}

// A fresh Ed25519 key pair as PEM files.
void make_key(const std::string& private_pem, const std::string& public_pem) {
  EVP_PKEY* k = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  ASSERT_NE(k, nullptr);
  for (const auto& [path, is_private] : {std::pair{private_pem, true}, {public_pem, false}}) {
    BIO* b = BIO_new_file(path.c_str(), "w");
    ASSERT_NE(b, nullptr);
    const int ok = is_private
                       ? PEM_write_bio_PrivateKey(b, k, nullptr, nullptr, 0, nullptr, nullptr)
                       : PEM_write_bio_PUBKEY(b, k);
    BIO_free(b);
    ASSERT_EQ(ok, 1);
  }
  EVP_PKEY_free(k);
}

// A data frame of the executions stream, located in its segment file's bytes.
struct frame {
  std::string* file;
  size_t pos;       // of the frame header
  size_t body_len;  // as in the header
  size_t value_pos;
  size_t value_len;
  std::string_view value() const { return std::string_view(*file).substr(value_pos, value_len); }
};

// Frame layout: engine/embedded_log.cc (header: magic, crc32c of [8, 16 + body), body length,
// type; data body: stream, offset, key length, key, value).
std::vector<frame> executions_frames(std::vector<std::string>& files) {
  std::vector<frame> out;
  for (std::string& f : files) {
    for (size_t pos = 0; pos + 16 <= f.size() && f.compare(pos, 4, "AUTL") == 0;) {
      uint32_t body = 0;
      std::memcpy(&body, f.data() + pos + 8, 4);
      const size_t b = pos + 16;
      if (f[pos + 12] == 1 && f[b] == 1) {  // a data frame of stream 1, executions
        uint32_t key_len = 0;
        std::memcpy(&key_len, f.data() + b + 9, 4);
        const size_t value_pos = b + 13 + key_len;
        out.push_back({&f, pos, body, value_pos, b + body - value_pos});
      }
      pos = b + body;
    }
  }
  return out;
}

void fix_crc(const frame& fr) {
  const uint32_t crc = crc32c::value(fr.file->data() + fr.pos + 8, 8 + fr.body_len);
  std::memcpy(fr.file->data() + fr.pos + 4, &crc, 4);
}

// Edits `execution`'s ExecutionStarted input ("Maria" -> "Mario") in the log of `data` and
// re-chains the execution's later events, fixing each frame's checksum: a consistent rewrite.
// Returns the number of events rewritten.
size_t rewrite_history(const std::string& data, const std::string& execution) {
  size_t rewritten = 0;
  for (const auto& pdir : fs::directory_iterator(data + "/log")) {
    if (!pdir.is_directory() || pdir.path().filename().string()[0] != 'p') continue;
    std::vector<std::string> names;
    for (const auto& s : fs::directory_iterator(pdir.path())) names.push_back(s.path().string());
    std::sort(names.begin(), names.end());
    std::vector<std::string> files;
    for (const std::string& n : names) files.push_back(slurp(n));
    hash256 old_prev{}, new_prev{};
    bool editing = false;
    for (const frame& fr : executions_frames(files)) {
      const fbs::Envelope* e = decode_envelope(fr.value());
      if (!e || sv(e->execution_id()) != execution) continue;
      const hash256 old_hash = sha256(fr.value());
      char* v = fr.file->data() + fr.value_pos;
      if (e->payload_type() == fbs::Payload::ExecutionStarted) {
        const size_t at = fr.value().find("Maria");
        EXPECT_NE(at, std::string_view::npos);
        if (at == std::string_view::npos) return 0;
        v[at + 4] = 'o';
        editing = true;
      } else if (editing) {
        const size_t at = fr.value().find(
            std::string_view(reinterpret_cast<const char*>(old_prev.data()), old_prev.size()));
        EXPECT_NE(at, std::string_view::npos) << "an event without its prev_hash";
        if (at == std::string_view::npos) return 0;
        std::memcpy(v + at, new_prev.data(), new_prev.size());
      } else {
        continue;
      }
      EXPECT_NE(decode_envelope(fr.value()), nullptr);
      fix_crc(fr);
      ++rewritten;
      old_prev = old_hash;
      new_prev = sha256(fr.value());
    }
    for (size_t i = 0; i < names.size(); ++i) spit(names[i], files[i]);
  }
  return rewritten;
}

constexpr std::string_view workflow = R"({"workflow":"two","version":1,"steps":[
  {"id":"a","kind":"task","action":"transform","input":{"text":"hello {{input.name}}"}},
  {"id":"b","kind":"task","action":"transform","after":["a"],
   "input":{"text":"{{steps.a.output.text}}!"}}]})";

class anchors : public ::testing::Test {
 protected:
  // One real run on 2 partitions with anchors; the auditor's export of them.
  static void SetUpTestSuite() {
    _dir = new dir_guard{scratch_temp_dir("anchors")};
    const std::string& t = _dir->path;
    make_key(t + "/key.pem", t + "/pub.pem");
    make_key(t + "/other.pem", t + "/other_pub.pem");
    spit(t + "/wf.json", workflow);
    const std::string d = t + "/run";
    ASSERT_EQ(cli(fmt::format("publish --data {} --partitions 2 --tenant acme {}/wf.json", d, t)),
              0);
    for (int i = 1; i <= 4; ++i) {
      ASSERT_EQ(cli(fmt::format("start --data {} --tenant acme --workflow two --id e{} --input "
                                "'{{\"name\":\"Maria\"}}'",
                                d, i)),
                0);
    }
    ASSERT_EQ(cli(fmt::format("run --data {} --no-fsync --until-quiet --anchor-key file:{}/key.pem",
                              d, t)),
              0);
    ASSERT_EQ(cli(fmt::format("anchors export --data {} --out {}/kept.jsonl "
                              "--anchor-public-key file:{}/pub.pem",
                              d, t, t)),
              0);
  }
  static void TearDownTestSuite() { delete _dir; }

  static int cli(const std::string& args, outcome* o = nullptr) {
    outcome r = run_cli(args, _dir->path + "/cmd.err");
    if (r.code != 0 && !o) ADD_FAILURE() << "auterity " << args << ": " << r.out << r.err;
    if (o) *o = r;
    return r.code;
  }
  static std::string copy_of_run(const std::string& name) {
    const std::string to = _dir->path + "/" + name;
    fs::copy(_dir->path + "/run", to, fs::copy_options::recursive);
    return to;
  }
  static std::string verify_anchors(const std::string& d, const std::string& file,
                                    const std::string& key = "pub.pem") {
    return fmt::format(
        "replay verify --no-progress --data {} --anchors {} "
        "--anchor-public-key file:{}/{}",
        d, file, _dir->path, key);
  }
  static std::string kept() { return _dir->path + "/kept.jsonl"; }

  static inline dir_guard* _dir = nullptr;
};

TEST_F(anchors, the_engine_writes_one_at_start_and_one_at_clean_shutdown_and_they_verify) {
  const std::string lines = slurp(kept());
  EXPECT_EQ(std::count(lines.begin(), lines.end(), '\n'), 2) << lines;
  outcome o;
  EXPECT_EQ(cli(verify_anchors(_dir->path + "/run", kept()), &o), 0) << o.out << o.err;
  EXPECT_NE(o.out.find("signed anchors match"), std::string::npos) << o.out;
}

TEST_F(anchors, a_consistent_rewrite_passes_every_other_check_and_is_caught_by_the_anchors) {
  const std::string c = copy_of_run("rewritten");
  ASSERT_GE(rewrite_history(c, "e2"), 3u);  // ExecutionStarted and the events after it
  // The attacker rebuilds the state from the rewritten log with the engine itself.
  fs::remove_all(c + "/state");
  ASSERT_EQ(cli(fmt::format("run --data {} --no-fsync --until-quiet", c)), 0);

  outcome o;
  ASSERT_EQ(cli("replay verify --no-progress --data " + c, &o), 0)
      << "the rewrite is not consistent, so it proves nothing about the anchors:\n"
      << o.out << o.err;
  ASSERT_EQ(cli("replay state --data " + c + " --tenant acme --execution e2", &o), 0);
  EXPECT_NE(o.out.find("Mario"), std::string::npos) << o.out;

  EXPECT_EQ(cli(verify_anchors(c, kept()), &o), 1) << o.out << o.err;
  EXPECT_NE(o.out.find("REWRITTEN"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("PROBLEMS FOUND"), std::string::npos) << o.out;

  const uint64_t anchors_size = fs::file_size(c + "/anchors/anchors.jsonl");
  EXPECT_EQ(cli(fmt::format("run --data {} --no-fsync --until-quiet --verify-on-start "
                            "--anchor-key file:{}/key.pem",
                            c, _dir->path),
                &o),
            4)
      << o.out << o.err;
  EXPECT_NE(o.err.find("REWRITTEN"), std::string::npos) << o.err;
  EXPECT_EQ(fs::file_size(c + "/anchors/anchors.jsonl"), anchors_size)
      << "a refused start wrote an anchor over the rewritten log";
}

TEST_F(anchors, verify_on_start_accepts_the_genuine_log_and_resumes_the_chain) {
  const std::string c = copy_of_run("genuine");
  outcome o;
  EXPECT_EQ(cli(fmt::format("run --data {} --no-fsync --until-quiet --verify-on-start "
                            "--anchor-key file:{}/key.pem",
                            c, _dir->path),
                &o),
            0)
      << o.err;
  const std::string lines = slurp(c + "/anchors/anchors.jsonl");
  EXPECT_EQ(std::count(lines.begin(), lines.end(), '\n'), 4) << lines;
  EXPECT_EQ(cli(verify_anchors(c, c + "/anchors/anchors.jsonl"), &o), 0) << o.out << o.err;
}

TEST_F(anchors, a_forged_or_foreign_anchor_is_a_problem) {
  std::string lines = slurp(kept());
  const size_t head = lines.find("\"head\":\"") + 8;
  lines[head] = lines[head] == '0' ? '1' : '0';
  const std::string forged = _dir->path + "/forged.jsonl";
  spit(forged, lines);
  outcome o;
  EXPECT_EQ(cli(verify_anchors(_dir->path + "/run", forged), &o), 1) << o.out << o.err;
  EXPECT_NE(o.out.find("BAD SIGNATURE"), std::string::npos) << o.out;
  EXPECT_EQ(cli(verify_anchors(_dir->path + "/run", kept(), "other_pub.pem"), &o), 1) << o.out;
  EXPECT_NE(o.out.find("BAD SIGNATURE"), std::string::npos) << o.out;
  EXPECT_EQ(
      cli(fmt::format("anchors export --data {}/run --anchor-public-key file:{}/other_pub.pem",
                      _dir->path, _dir->path),
          &o),
      1);
  EXPECT_TRUE(o.out.empty()) << o.out;
}

TEST_F(anchors, a_key_that_is_not_there_or_not_ed25519_is_a_clear_error) {
  const std::string c = copy_of_run("bad-keys");
  outcome o;
  EXPECT_EQ(cli(fmt::format("run --data {} --until-quiet --anchor-key file:{}/missing.pem", c,
                            _dir->path),
                &o),
            2);
  EXPECT_NE(o.err.find("missing.pem"), std::string::npos) << o.err;
  EXPECT_EQ(
      cli(fmt::format("run --data {} --until-quiet --anchor-key file:{}/wf.json", c, _dir->path),
          &o),
      2);
  EXPECT_NE(o.err.find("not a PEM private key"), std::string::npos) << o.err;
  EXPECT_EQ(cli(fmt::format("run --data {} --until-quiet --verify-on-start", c), &o), 2);
  EXPECT_NE(o.err.find("--verify-on-start needs --anchor-key"), std::string::npos) << o.err;
}

}  // namespace
}  // namespace auterity::testing
