// The HTML timeline, opened in a real browser (headless Chromium from Debian's packages): its
// script must draw a bar for every step attempt of every execution and a marker for every
// record. The page as written holds only data, so a broken script fails this test.
//
// Chromium is required: build.sh installs it (package `chromium`). Without it this test FAILS
// and says so — it never skips.

#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <regex>

#include <gtest/gtest.h>

#include "replay/render.h"
#include "replay/source.h"
#include "replay/tests/golden.h"
#include "replay/timeline_export.h"

namespace auterity::testing {
namespace {

std::string find_chromium() {
  if (const char* env = std::getenv("AUTERITY_CHROMIUM")) {
    return ::access(env, X_OK) == 0 ? env : "";
  }
  for (const char* path : {"/usr/bin/chromium", "/usr/bin/chromium-browser"}) {
    if (::access(path, X_OK) == 0) return path;
  }
  return {};
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The DOM after the page's scripts ran, as Chromium serialises it.
std::string rendered_dom(const std::string& chromium, const std::string& page,
                         const std::string& profile) {
  const std::string cmd = fmt::format(
      "timeout 120 '{}' --headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
      "--disable-background-networking --disable-component-update --disable-sync "
      "--user-data-dir='{}' --dump-dom 'file://{}' 2>/dev/null",
      chromium, profile, page);
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return {};
  std::string dom;
  char buf[65536];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) dom.append(buf, n);
  const int status = ::pclose(p);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "chromium failed: " << cmd;
  return dom;
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

TEST(html_timeline, renders_every_step_bar_in_a_browser) {
  const std::string chromium = find_chromium();
  ASSERT_FALSE(chromium.empty())
      << "headless Chromium is needed to test the HTML timeline and was not found: install "
         "Debian's `chromium` package (./build.sh installs it) or set AUTERITY_CHROMIUM";

  const history_file fixture = load_golden();
  dir_guard dir{scratch_temp_dir("html")};
  auto l = write_log(dir.path, fixture.partitions, fixture.records);
  ASSERT_TRUE(l.has_value()) << l.error().message;

  // What the page must show: the C++ views of every execution.
  std::map<std::string, size_t> bars_of;  // execution -> step attempts
  size_t records = 0;
  for (uint32_t p = 0; p < fixture.partitions; ++p) {
    merged_reader reader(**l, p, timeline_streams);
    history_collector c(p, {}, [&](history&& h) -> result<void> {
      const execution_view v = build_view(h);
      if (!v.execution.empty()) bars_of[v.execution] = v.bars.size();
      records += v.lines.size();
      return {};
    });
    for (auto r = reader.next(); r && *r; r = reader.next()) ASSERT_TRUE(c.add(**r).has_value());
    ASSERT_TRUE(c.finish().has_value());
  }
  ASSERT_EQ(bars_of.size(), 6u);

  const std::string page = dir.path + "/timeline.html";
  std::FILE* out = std::fopen(page.c_str(), "wb");
  timeline_options o;
  o.format = timeline_format::html;
  o.title = "Golden history";
  ASSERT_TRUE(write_timeline(**l, o, out).has_value());
  std::fclose(out);
  const std::string written = read_file(page);
  EXPECT_EQ(count(written, "class=\"bar "), 0u) << "bars must come from the script, not the file";
  EXPECT_EQ(written.find("http://"), std::string::npos) << "the page must not load anything";
  EXPECT_EQ(written.find("https://"), std::string::npos) << "the page must not load anything";

  const std::string dom = rendered_dom(chromium, page, dir.path + "/profile");
  ASSERT_NE(dom.find("data-rendered=\"ok\""), std::string::npos)
      << "the page's script did not finish: " << dom.substr(0, 2000);
  size_t total = 0;
  for (const auto& [execution, bars] : bars_of) {
    const std::regex bar("<div class=\"bar outcome-[a-z_]+\" data-execution=\"" + execution +
                         "\" data-step=\"[a-z_]+\" data-attempt=\"[0-9]+\" data-outcome=\"");
    const auto drawn =
        std::distance(std::sregex_iterator(dom.begin(), dom.end(), bar), std::sregex_iterator());
    EXPECT_EQ(static_cast<size_t>(drawn), bars) << "step bars of " << execution;
    EXPECT_NE(dom.find("class=\"exec-row\" data-tenant="), std::string::npos);
    total += bars;
  }
  EXPECT_NE(dom.find(fmt::format("data-bars=\"{}\"", total)), std::string::npos);
  EXPECT_EQ(count(dom, "class=\"marker "), records);
  // Outcomes are coloured apart: the retried valuation, the skipped and cancelled steps.
  for (const char* outcome : {"succeeded", "retry", "skipped", "cancelled", "failed"}) {
    EXPECT_NE(dom.find(fmt::format("data-outcome=\"{}\"", outcome)), std::string::npos) << outcome;
  }
}

}  // namespace
}  // namespace auterity::testing
