#pragma once
// For the tests that drive the `auterity` binary as a user would: runs a shell command and
// returns its exit code and what it printed on stdout (append " 2>&1" for stderr too).

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace auterity::testing {

struct command_outcome {
  int code = -1;  // the exit code; 128 + the signal if a signal ended it; -1 if it did not run
  std::string out;
};

inline command_outcome run_command(const std::string& command) {
  command_outcome o;
  std::FILE* p = ::popen(command.c_str(), "r");
  if (!p) return o;
  char buf[8192];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) o.out.append(buf, n);
  const int status = ::pclose(p);
  o.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return o;
}

}  // namespace auterity::testing
