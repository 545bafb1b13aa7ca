#pragma once
// For the tests that drive the `auterity` binary as a user would: runs a shell command and
// returns its exit code and what it printed on stdout (append " 2>&1" for stderr too).

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

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

// Starts args[0] with `args` and the environment `envp` (default: this process's), its stdout and
// stderr appended to `out`; its pid, or -1 (errno-style code in *error if given) if it could not
// start.
inline pid_t spawn_logged(std::vector<std::string> args, const std::string& out,
                          char** envp = environ, int* error = nullptr) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp);
  posix_spawn_file_actions_destroy(&actions);
  if (error) *error = rc;
  return rc == 0 ? pid : -1;
}

}  // namespace auterity::testing
