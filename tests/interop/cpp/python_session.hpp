// A model of the framework's PythonSession (PyTorchSession in V1.20) file-channel client.
//
// Written from /work/shared/brief/session-protocol.md and the design document's code
// excerpts; standard library only, C++17. WORKSPACE and the directory layout
// ("python_session" or, for V1.20, "pytorch_session") are constructor arguments here
// (the real client has WORKSPACE_PATH as a compile-time macro).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>

#include "tr_tensor.hpp"

namespace trkit {

// The client's response parsing: no JSON parser. Find the first `"params":`, skip to the
// next `"`, return everything up to the next `"` not preceded by a backslash, unescaped.
inline std::string extract_params(const std::string& json) {
  const std::string key = "\"params\":";
  const std::size_t k = json.find(key);
  if (k == std::string::npos) return "";
  const std::size_t open = json.find('"', k + key.size());
  if (open == std::string::npos) return "";
  const std::size_t start = open + 1;
  std::size_t pos = start;
  while (true) {
    const std::size_t q = json.find('"', pos);
    if (q == std::string::npos) return json.substr(start);
    if (q > start && json[q - 1] == '\\') {
      pos = q + 1;
      continue;
    }
    return json.substr(start, q - start);
  }
}

class PythonSession {
 public:
  PythonSession(std::string script_path, std::string session_id, std::string workspace,
                std::string layout = "python_session", std::uint32_t warmup_ms = 300)
      : script_path_(std::move(script_path)),
        session_id_(std::move(session_id)),
        workspace_(std::move(workspace)),
        layout_(std::move(layout)),
        warmup_ms_(warmup_ms) {
    create_session_dir();
    std::error_code ec;
    std::filesystem::remove(session_dir_ + "/request.json", ec);
    std::filesystem::remove(session_dir_ + "/response.json", ec);
  }

  ~PythonSession() {
    try {
      if (running_) terminate();
      std::error_code ec;
      std::filesystem::remove_all(session_dir_, ec);
    } catch (...) {
    }
  }

  PythonSession(const PythonSession&) = delete;
  PythonSession& operator=(const PythonSession&) = delete;

  // ---- process control ----
  void start() {
    if (running_) return;
    if (!std::filesystem::exists(script_path_)) {
      throw TRException("Python script not found: " + script_path_);
    }
    const std::string cmd = "python3 \"" + script_path_ + "\" " + session_id_ + " &";
    const int ret = std::system(cmd.c_str());
    (void)ret;
    running_ = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    write_status_file("ready");
    std::this_thread::sleep_for(std::chrono::milliseconds(warmup_ms_));
  }

  bool is_alive() const {
    const std::string s = read_status_file();
    return !(s == "terminated" || s.rfind("error:", 0) == 0);
  }

  void terminate() {
    write_status_file("exit");
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    running_ = false;
  }

  // Waits until ready, then sends the exit command. (`ensure`: when the worker never gets
  // ready, fall back to terminate(); an assumption, the brief does not say.)
  void please_exit(std::uint32_t timeout_ms = 10000, bool ensure = true) {
    if (!wait_until_ready(timeout_ms)) {
      if (ensure) terminate();
      return;
    }
    send_request(R"({"cmd": "exit"})");
  }

  // ---- state ----
  bool is_ready() const { return !std::filesystem::exists(request_path()); }
  bool is_busy() const { return !is_ready(); }
  bool new_response() const { return std::filesystem::exists(response_path()); }
  bool wait_until_ready(std::uint32_t timeout_ms = 10000) const {
    return poll_with_backoff([this] { return is_ready(); }, timeout_ms);
  }
  bool wait_until_ok(std::uint32_t timeout_ms = 10000) const {
    return poll_with_backoff([this] { return new_response(); }, timeout_ms);
  }

  // ---- text channel ----
  void send_request(const std::string& msg) const {
    const std::string tmp = session_dir_ + "/request.tmp";
    std::ofstream(tmp) << msg;
    std::error_code ec;
    std::filesystem::rename(tmp, request_path(), ec);
    if (ec) throw TRException("[PythonSession::send_request] rename failed");
  }

  // Reads response.json, deletes it ("read then burn"), returns its params.
  std::string read_response() const {
    std::string text;
    {
      std::ifstream in(response_path(), std::ios::binary);
      if (!in) return "";
      text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    std::error_code ec;
    std::filesystem::remove(response_path(), ec);
    return extract_params(text);
  }

  std::string wait_for_response(std::uint32_t timeout_ms = 10000) const {
    if (!wait_until_ok(timeout_ms)) return "";
    return read_response();
  }

  std::string fetch_response(const std::string& msg, std::uint32_t timeout_ms = 10000) const {
    if (!wait_until_ready(timeout_ms)) return "";
    send_request(msg);
    if (!wait_until_ok(timeout_ms)) return "";
    return read_response();
  }

  // ---- tensors ----
  void send_tensor(const Tensor& tensor, const std::string& tag) const {
    if (!running_) throw TRException("[PythonSession::send_tensor] Session not running");
    export_tensor(tensor, session_dir_ + "/" + tag + ".tsr");  // plain, non-atomic write
  }

  Tensor fetch_tensor(const std::string& msg, std::uint32_t timeout_ms = 10000) const {
    if (!running_) throw TRException("[PythonSession::fetch_tensor] Session not running");
    const std::string response = fetch_response(msg, timeout_ms);
    if (response.empty()) {
      throw TRException("[PythonSession::fetch_tensor] Failed to get tensor response");
    }
    return import_result(response, timeout_ms);
  }

  Tensor wait_for_tensor(std::uint32_t timeout_ms = 10000) const {
    if (!running_) throw TRException("[PythonSession::wait_for_tensor] Session not running");
    const std::string response = wait_for_response(timeout_ms);
    if (response.empty()) {
      throw TRException("[PythonSession::wait_for_tensor] Failed to get tensor response");
    }
    return import_result(response, timeout_ms);
  }

  // V1.20 style (the design document's tests): wait for <tag>.tsr itself, no response.
  Tensor recv_tensor(const std::string& tag, std::uint32_t timeout_ms = 10000) const {
    if (!running_) throw TRException("[PythonSession::recv_tensor] Session not running");
    return import_result(tag, timeout_ms);
  }

  Tensor calculate(const std::string& op, const Tensor& a, std::uint32_t timeout_ms = 10000) const {
    send_tensor(a, "a");
    return fetch_tensor(R"({"cmd": ")" + op + R"(", "params": "a"})", timeout_ms);
  }
  Tensor calculate(const std::string& op, const Tensor& a, const Tensor& b,
                   std::uint32_t timeout_ms = 10000) const {
    send_tensor(a, "a");
    send_tensor(b, "b");
    return fetch_tensor(R"({"cmd": ")" + op + R"(", "params": "a,b"})", timeout_ms);
  }

  const std::string& session_id() const { return session_id_; }
  std::string session_dir() const { return session_dir_; }
  std::string status() const { return read_status_file(); }

 private:
  std::string request_path() const { return session_dir_ + "/request.json"; }
  std::string response_path() const { return session_dir_ + "/response.json"; }

  void create_session_dir() {
    namespace fs = std::filesystem;
    const std::string base_dir = workspace_ + "/" + layout_;
    if (!fs::exists(base_dir)) fs::create_directories(base_dir);
    session_dir_ = base_dir + "/tr_session_" + session_id_;
    fs::create_directories(session_dir_);
  }

  void write_status_file(const std::string& status) const {
    std::ofstream(session_dir_ + "/status.txt") << status;
  }

  std::string read_status_file() const {
    std::ifstream in(session_dir_ + "/status.txt");
    std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
    return s;
  }

  // Check, sleep 32 ms, double the sleep after every 8 misses, at most 1024 ms.
  // timeout_ms == 0 waits forever.
  template <class Pred>
  static bool poll_with_backoff(Pred ready, std::uint32_t timeout_ms) {
    const auto start = std::chrono::steady_clock::now();
    std::uint32_t sleep_ms = 32;
    std::uint32_t misses = 0;
    while (true) {
      if (ready()) return true;
      const auto waited = std::chrono::steady_clock::now() - start;
      if (timeout_ms != 0 && waited >= std::chrono::milliseconds(timeout_ms)) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
      if (++misses % 8 == 0 && sleep_ms < 1024) sleep_ms *= 2;
    }
  }

  // Waits (100 ms polls) for <tag>.tsr with a non-zero size, then imports it.
  Tensor import_result(const std::string& tag, std::uint32_t timeout_ms) const {
    const std::string result_path = session_dir_ + "/" + tag + ".tsr";
    if (!wait_for_file(result_path, timeout_ms)) {
      throw TRException("[PythonSession::fetch_tensor] Timeout waiting for tensor file: " +
                        result_path);
    }
    return import_tensor(result_path);
  }

  static bool wait_for_file(const std::string& path, std::uint32_t timeout_ms) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < deadline) {
      if (std::filesystem::exists(path)) {
        std::ifstream f(path, std::ios::binary | std::ios::ate);
        if (f.tellg() > 0) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  std::string script_path_;
  std::string session_id_;
  std::string workspace_;
  std::string layout_;
  std::uint32_t warmup_ms_;
  std::string session_dir_;
  bool running_ = false;
};

}  // namespace trkit
