// The anchor writer and verifier on a real embedded log (docs/anchors.md): anchors of a subset
// of the partitions, as an instance on Kafka writes them (only the partitions it owns),
// resumed per partition from the last line that holds it, and the files of several writers
// verified together. The end-to-end tests are replay/tests/anchors_test.cc (embedded) and
// tests/kafka_engine_test.cc (`anchors_*`, a real broker).

#include "engine/anchors.h"

#include <filesystem>
#include <fstream>
#include <memory>

#include <fmt/core.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "engine/embedded_log.h"

namespace auterity {
namespace {

namespace fs = std::filesystem;

// A fresh Ed25519 private key as PEM text.
std::string new_key_pem() {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> k(
      EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"), EVP_PKEY_free);
  std::unique_ptr<BIO, decltype(&BIO_free)> b(BIO_new(BIO_s_mem()), BIO_free);
  if (!k || !b ||
      PEM_write_bio_PrivateKey(b.get(), k.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return "";
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(b.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

class anchors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fmt::format("{}/anchors-test-{}-{}", ::testing::TempDir(), ::getpid(),
                      ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    pem = new_key_pem();
    ASSERT_FALSE(pem.empty());
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir);
  }

  std::unique_ptr<log> open_log(const std::string& name) {
    embedded_log_options o;
    o.partitions = 2;
    o.fsync = false;
    auto l = open_embedded_log(dir + "/" + name, o);
    EXPECT_TRUE(l.has_value()) << l.error().message;
    return l ? std::move(*l) : nullptr;
  }
  static void append(log& l, uint32_t p, const std::string& value) {
    commit_batch b;
    b.add(stream::executions, "acme", value);
    auto r = l.commit(p, b);
    ASSERT_TRUE(r.has_value()) << r.error().message;
  }
  std::unique_ptr<anchor_writer> writer(log& l, const std::string& file) {
    auto key = anchor_key::from_pem(pem, /*need_private=*/true);
    EXPECT_TRUE(key.has_value());
    anchor_writer_options o;
    o.path = dir + "/" + file;
    auto w = anchor_writer::open(l, std::move(*key), o, nullptr);
    EXPECT_TRUE(w.has_value()) << w.error().message;
    return w ? std::move(*w) : nullptr;
  }
  std::vector<anchor_line> lines(const std::vector<std::string>& files) {
    auto key = anchor_key::from_pem(pem, /*need_private=*/false);
    std::vector<anchor_line> out;
    for (const std::string& f : files) {
      auto read = read_anchors(dir + "/" + f, &*key);
      EXPECT_TRUE(read.has_value()) << read.error().message;
      if (read) out.insert(out.end(), read->begin(), read->end());
    }
    return out;
  }
  // The chain of partition p recomputed from offset 0 to the log's end.
  static partition_head recomputed(log& l, uint32_t p) {
    partition_head h{p, 0, {}};
    auto end = l.end_offset(stream::executions, p);
    EXPECT_TRUE(end.has_value());
    EXPECT_TRUE(extend_head_to(l, h, *end).value_or(false));
    return h;
  }
  // True if `r` says a line was written; a failure fails the test with its message.
  static bool wrote(const result<bool>& r) {
    EXPECT_TRUE(r.has_value()) << r.error().message;
    return r && *r;
  }
  static std::vector<uint32_t> partitions_of(const anchor_line& line) {
    std::vector<uint32_t> out;
    for (const partition_head& h : line.value->partitions) out.push_back(h.partition);
    return out;
  }

  std::string dir, pem;
};

TEST_F(anchors, a_writer_anchors_only_the_partitions_it_is_given_and_resumes_each) {
  auto l = open_log("log");
  for (int i = 0; i < 3; ++i) append(*l, 0, fmt::format("p0 r{}", i));
  for (int i = 0; i < 2; ++i) append(*l, 1, fmt::format("p1 r{}", i));
  {
    auto w = writer(*l, "a.jsonl");
    EXPECT_TRUE(wrote(w->write(1, false, std::vector<uint32_t>{0})));
    append(*l, 0, "p0 r3");
    append(*l, 1, "p1 r2");
    EXPECT_TRUE(wrote(w->write(2, false, std::vector<uint32_t>{1})));
    // Nothing owned: nothing written, even forced.
    EXPECT_FALSE(wrote(w->write(3, true, std::vector<uint32_t>{})));
    // p1 did not grow since its anchor: nothing to write.
    EXPECT_FALSE(wrote(w->write(4, false, std::vector<uint32_t>{1})));
  }
  auto read = lines({"a.jsonl"});
  ASSERT_EQ(read.size(), 2u);
  EXPECT_EQ(partitions_of(read[0]), std::vector<uint32_t>{0});
  EXPECT_EQ(read[0].value->partitions[0].end, 3u);
  EXPECT_EQ(partitions_of(read[1]), std::vector<uint32_t>{1});
  EXPECT_EQ(read[1].value->partitions[0], recomputed(*l, 1));

  // Reopened: p0 resumes from line 1 (the last holding it), p1 from line 2; p0 grew since.
  append(*l, 0, "p0 r4");
  auto w = writer(*l, "a.jsonl");
  EXPECT_EQ(w->heads()[0].end, 3u);
  EXPECT_EQ(w->heads()[1], read[1].value->partitions[0]);
  EXPECT_TRUE(wrote(w->write(5, false, std::vector<uint32_t>{1, 0})));
  read = lines({"a.jsonl"});
  ASSERT_EQ(read.size(), 3u);
  EXPECT_EQ(partitions_of(read[2]), (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(read[2].value->partitions[0], recomputed(*l, 0));
  EXPECT_EQ(read[2].value->partitions[1], recomputed(*l, 1));
  auto check = verify_anchors(*l, read);
  ASSERT_TRUE(check.has_value());
  EXPECT_TRUE(check->problems.empty()) << check->problems.front();
  EXPECT_EQ(check->partition_heads, 4u);
}

// Two instances' files: each in time order on its own, interleaved together; a partition anchored
// in both is checked in one pass. On a log that differs after the first anchored end, the
// problem names the file, the line and the offsets between which the change lies.
TEST_F(anchors, files_of_two_writers_verify_together_and_bound_a_rewrite) {
  auto l = open_log("log");
  auto other = open_log("other");  // the same first 3 records of p0, then another one
  for (int i = 0; i < 3; ++i) {
    append(*l, 0, fmt::format("p0 r{}", i));
    append(*other, 0, fmt::format("p0 r{}", i));
  }
  append(*l, 1, "p1 r0");
  append(*other, 1, "p1 r0");
  auto b = writer(*l, "b.jsonl");
  EXPECT_TRUE(wrote(b->write(100, false, std::vector<uint32_t>{0, 1})));
  append(*l, 0, "p0 r3");
  append(*other, 0, "p0 r3, rewritten");
  auto a = writer(*l, "a.jsonl");
  EXPECT_TRUE(wrote(a->write(50, false, std::vector<uint32_t>{0})));  // earlier, in another file

  auto check = verify_anchors(*l, lines({"a.jsonl", "b.jsonl"}));
  ASSERT_TRUE(check.has_value());
  EXPECT_TRUE(check->problems.empty()) << check->problems.front();
  EXPECT_EQ(check->anchors, 2u);
  EXPECT_EQ(check->partition_heads, 3u);

  check = verify_anchors(*other, lines({"a.jsonl", "b.jsonl"}));
  ASSERT_TRUE(check.has_value());
  ASSERT_EQ(check->problems.size(), 1u);
  const std::string& p = check->problems.front();
  EXPECT_NE(p.find(fmt::format("anchors {}/a.jsonl line 1: partition 0: REWRITTEN", dir)),
            std::string::npos)
      << p;
  EXPECT_NE(p.find("a record at an offset in [3, 4)"), std::string::npos) << p;
  EXPECT_NE(p.find("the chain matches the anchor at offset 3"), std::string::npos) << p;

  // Within one file, time going back is a problem.
  {
    std::ofstream out(dir + "/b.jsonl", std::ios::app);
    std::ifstream in(dir + "/a.jsonl");
    std::string line;
    std::getline(in, line);
    out << line << "\n";  // a's line, time 50, after b's line of time 100
  }
  check = verify_anchors(*l, lines({"b.jsonl"}));
  ASSERT_TRUE(check.has_value());
  ASSERT_EQ(check->problems.size(), 1u);
  EXPECT_NE(check->problems.front().find("line 2: OUT OF ORDER"), std::string::npos)
      << check->problems.front();
}

}  // namespace
}  // namespace auterity
