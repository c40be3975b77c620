// A model of the V3 PythonSession (framework V3.6.11 430e55e to V4.0.0; Linux), written
// from /work/shared/brief/session-protocol-v3.md; standard library and POSIX only, C++17.
//
//   start()      creates <workspace>/python_session_id<N> (N = ns since the epoch mod 10^6);
//                an existing directory is an error; nothing is launched yet.
//   send()       writes input_i.tsr (TSR3 RAW) and request.json (by hand: keys in std::map
//                order, values strings, no escaping, a final newline); the FIRST send forks
//                and execlp(python, python, server, session_dir); every send sleeps 100 ms.
//   wait()       exists(response.json), 100 tries 100 ms apart (never reads it to check;
//                the count is a constructor argument here).
//   fetch()      success = "true" after "success" and before any "false"; message = the
//                text between the first two quotes after "message" + 10, not unescaped;
//                result is never parsed; reads output_0.tsr only.
//   stop()       SIGTERM; waitpid(WNOHANG) every 100 ms up to 50 times; SIGKILL and a blocking
//                waitpid; remove_all(session_dir).
//   print_tensor() sends "print_tensor", requires message "txt", reads and deletes output_0.txt.
#pragma once

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "tsr3_raw.hpp"

namespace trkit {

class DeviceError : public TRException {
 public:
  explicit DeviceError(const std::string& msg) : TRException(msg) {}
};

class PythonSessionV3 {
 public:
  // wait_tries: 100 in the framework (10 s); a test on a loaded machine may allow more.
  PythonSessionV3(std::string python_exe, std::string server_path, std::string workspace,
                  int wait_tries = 100)
      : python_exe_(std::move(python_exe)),
        server_path_(std::move(server_path)),
        workspace_(std::move(workspace)),
        wait_tries_(wait_tries) {}

  ~PythonSessionV3() {
    try {
      if (running_) stop();
    } catch (...) {
    }
  }

  PythonSessionV3(const PythonSessionV3&) = delete;
  PythonSessionV3& operator=(const PythonSessionV3&) = delete;

  void start() {
    namespace fs = std::filesystem;
    if (running_) throw DeviceError("PythonSession::start: Session is already running");
    const auto ns = std::chrono::system_clock::now().time_since_epoch().count();
    session_dir_ = workspace_ + "/python_session_id" + std::to_string(ns % 1000000);
    if (fs::exists(session_dir_)) {
      throw DeviceError("PythonSession::start: Failed to create session directory: " +
                        session_dir_);
    }
    fs::create_directories(session_dir_);
    running_ = true;
  }

  void send(const std::string& method, const std::vector<Tensor3>& inputs,
            const std::map<std::string, std::string>& params = {}) {
    if (!running_) throw DeviceError("PythonSession::send: Session is not running");
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      export_tensor_v3(inputs[i], session_dir_ + "/input_" + std::to_string(i) + ".tsr");
    }
    {
      std::ofstream req(session_dir_ + "/request.json");
      req << "{\n  \"method\": \"" << method << "\",\n  \"parameters\": {\n";
      std::size_t k = 0;
      for (const auto& [key, value] : params) {
        req << "    \"" << key << "\": \"" << value << "\"" << (++k < params.size() ? "," : "")
            << "\n";
      }
      if (params.empty()) req << "\n";
      req << "  }\n}\n";
    }
    if (pid_ <= 0) launch();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }

  // settle (a test aid, not the framework): also wait for request.json to be gone, which
  // our server removes just before it answers; on a machine loaded past what the 100 ms
  // sleep assumes, the previous answer could otherwise still be there.
  void set_settle(bool settle) { settle_ = settle; }

  void wait() const {
    namespace fs = std::filesystem;
    for (int i = 0; i < wait_tries_; ++i) {
      if (fs::exists(session_dir_ + "/response.json") &&
          !(settle_ && fs::exists(session_dir_ + "/request.json"))) {
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    throw DeviceError("PythonSession::wait: Timeout waiting for Python response");
  }

  // success and message of response.json, as the client parses them.
  std::pair<bool, std::string> parse_response() const {
    std::ifstream in(session_dir_ + "/response.json");
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::size_t s = text.find("\"success\"");
    const std::size_t t = text.find("true", s == std::string::npos ? 0 : s);
    const std::size_t f = text.find("false", s == std::string::npos ? 0 : s);
    const bool success = t != std::string::npos && (f == std::string::npos || t < f);
    std::string message;
    const std::size_t m = text.find("\"message\"");
    if (m != std::string::npos) {
      const std::size_t q1 = text.find('"', m + 10);
      const std::size_t q2 = q1 == std::string::npos ? q1 : text.find('"', q1 + 1);
      if (q2 != std::string::npos) message = text.substr(q1 + 1, q2 - q1 - 1);
    }
    return {success, message};
  }

  Tensor3 fetch() const {
    const auto [success, message] = parse_response();
    if (!success) throw DeviceError("PythonSession::fetch: Python operation failed: " + message);
    const std::string out = session_dir_ + "/output_0.tsr";
    if (!std::filesystem::exists(out)) {
      throw DeviceError("PythonSession::fetch: Output tensor file not found: " + out);
    }
    return import_tensor_v3(out);
  }

  Tensor3 calculate(const std::string& method, const std::vector<Tensor3>& inputs,
                    const std::map<std::string, std::string>& params = {}) {
    send(method, inputs, params);
    wait();
    return fetch();
  }

  std::string print_tensor(const Tensor3& t) {
    send("print_tensor", {t});
    wait();
    const auto [success, message] = parse_response();
    if (!success || message != "txt") {
      throw DeviceError("PythonSession::print_tensor: Python operation failed: " + message);
    }
    const std::string path = session_dir_ + "/output_0.txt";
    std::ifstream in(path);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    in.close();
    std::filesystem::remove(path);
    return text;
  }

  // Returns the seconds it took (SIGTERM to the directory removed).
  double stop() {
    const auto t0 = std::chrono::steady_clock::now();
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      bool reaped = false;
      for (int i = 0; i < 50 && !reaped; ++i) {
        int status = 0;
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
          reaped = true;
          exit_status_ = status;
        } else {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      }
      if (!reaped) {
        killed_ = true;
        kill(pid_, SIGKILL);
        waitpid(pid_, &exit_status_, 0);
      }
      pid_ = -1;
    }
    std::error_code ec;
    std::filesystem::remove_all(session_dir_, ec);
    session_dir_.clear();
    running_ = false;
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  const std::string& session_dir() const { return session_dir_; }
  bool is_running() const { return running_; }
  pid_t pid() const { return pid_; }
  int launches() const { return launches_; }
  bool killed() const { return killed_; }
  int exit_status() const { return exit_status_; }

 private:
  void launch() {
    const pid_t pid = fork();
    if (pid == 0) {
      execlp(python_exe_.c_str(), python_exe_.c_str(), server_path_.c_str(), session_dir_.c_str(),
             static_cast<char*>(nullptr));
      std::fprintf(stderr, "Failed to execute Python: %s\n", python_exe_.c_str());
      _exit(1);
    }
    if (pid < 0) throw DeviceError("PythonSession::send: fork failed");
    pid_ = pid;
    ++launches_;
  }

  std::string python_exe_;
  std::string server_path_;
  std::string workspace_;
  int wait_tries_;
  bool settle_ = false;
  std::string session_dir_;
  bool running_ = false;
  pid_t pid_ = -1;
  int launches_ = 0;
  bool killed_ = false;
  int exit_status_ = 0;
};

}  // namespace trkit
