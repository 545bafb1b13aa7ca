#pragma once
// A loopback service for connector tests: runs a program (a Python protocol server under
// tests/connectors/, an SMTP server, ...), waits for it to print "LISTENING <port>" on its
// first line of stdout, and stops it (SIGTERM, then SIGKILL) when the test ends. The child
// gets SIGKILL if the test process dies, so a crashed test leaves no server behind.

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

namespace auterity::testing {

class service_process {
 public:
  // argv[0] is looked up on PATH. On failure port() is 0 and error() says why.
  explicit service_process(std::vector<std::string> argv) {
    int out[2];
    if (::pipe(out) != 0) {
      _error = "pipe failed";
      return;
    }
    const pid_t parent = ::getpid();
    _pid = ::fork();
    if (_pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      ::dup2(out[1], STDOUT_FILENO);
      ::close(out[0]);
      ::close(out[1]);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      ::_exit(127);
    }
    ::close(out[1]);
    _stdout = ::fdopen(out[0], "r");
    char line[512];
    if (!_stdout || !std::fgets(line, sizeof line, _stdout)) {
      _error = "service exited before it listened: " + argv[0];
      return;
    }
    if (std::sscanf(line, "LISTENING %d", &_port) != 1) {
      _error = "unexpected first line from " + argv[0] + ": " + line;
      _port = 0;
    }
  }
  ~service_process() { stop(); }
  service_process(const service_process&) = delete;
  service_process& operator=(const service_process&) = delete;

  int port() const { return _port; }
  const std::string& error() const { return _error; }
  std::string url(const std::string& path = "") const {
    return "http://127.0.0.1:" + std::to_string(_port) + path;
  }

  void stop() {
    if (_pid > 0) {
      ::kill(_pid, SIGTERM);
      for (int i = 0; i < 50; ++i) {
        if (::waitpid(_pid, nullptr, WNOHANG) == _pid) {
          _pid = -1;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (_pid > 0) {
        ::kill(_pid, SIGKILL);
        ::waitpid(_pid, nullptr, 0);
        _pid = -1;
      }
    }
    if (_stdout) {
      std::fclose(_stdout);
      _stdout = nullptr;
    }
  }

 private:
  pid_t _pid = -1;
  FILE* _stdout = nullptr;
  int _port = 0;
  std::string _error;
};

}  // namespace auterity::testing
