// session_driver: runs the PythonSession-like client of the conformance kit against a
// worker, the way a C++ program of the framework would, and reports what happened.
//
//   session_driver run --script LAUNCHER --workspace DIR --layout python_session|pytorch_session
//                      --session-id ID --out DIR [--scenario full|terminate|design]
//                      [--warmup-ms 300] [--timeout-ms 10000] [--idle-ms 0]
//     (--idle-ms N, terminate scenario: idle N ms, one request, idle N ms, then terminate())
//   session_driver parse          reads a response from stdin, prints "[<params>]"
//
// Output (stdout), one record per line:
//   STEP <name> <milliseconds>          per-step wall time
//   TEXT <label> <params>               a text reply, raw as the client parsed it
//   RESULT <label> <file>               a result tensor, exported with the kit's writer
//   INPUT <label> <tag> <file>          the exact input tensor that was sent
//   CHECK <name> ok | CHECK <name> FAIL <detail>
//   DONE ok | DONE fail
// Exit status 0 when every CHECK passed.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "python_session.hpp"
#include "tr_tensor.hpp"

namespace {

using trkit::DType;
using trkit::PythonSession;
using trkit::Shape;
using trkit::Tensor;
using Clock = std::chrono::steady_clock;

bool g_all_ok = true;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

void step(const std::string& name, double ms) {
  std::cout << "STEP " << name << " " << ms << std::endl;
}

void check(const std::string& name, bool ok, const std::string& detail = "") {
  if (!ok) g_all_ok = false;
  std::cout << "CHECK " << name << (ok ? " ok" : " FAIL " + detail) << std::endl;
}

// Deterministic input values: ((i*37 + seed) % 29 - 14) * scale + offset. With scale 0.25
// they include zeros and exact .5 ties (for round), negatives and positives.
Tensor make_input(const std::vector<std::int32_t>& dims, int seed, double scale, double offset,
                  DType dtype = DType::FP32) {
  Tensor t = Tensor::empty(Shape::from_dims(dims), dtype);
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    t.set(i, static_cast<double>((i * 37 + seed) % 29 - 14) * scale + offset);
  }
  return t;
}

struct InputSpec {
  std::string tag;
  std::vector<std::int32_t> dims;
  int seed;
  double scale;
  double offset;
};

struct CommandSpec {
  std::string label;  // unique name for files
  std::string cmd;
  std::vector<InputSpec> inputs;
  std::string request;  // "" = {"cmd": "<cmd>", "params": "<tags>"}
  bool v120 = false;    // V1.20 style: plain write of request.json, then recv_tensor("output")
};

std::vector<CommandSpec> command_specs() {
  const std::vector<std::int32_t> img{2, 3, 8, 8};
  std::vector<CommandSpec> v;
  v.push_back({"matmul", "matmul", {{"a", {4, 3}, 1, 0.25, 0}, {"b", {3, 5}, 2, 0.5, 0}}, ""});
  v.push_back({"add", "add", {{"a", {2, 3, 4}, 3, 0.25, 0}, {"b", {2, 3, 4}, 4, 0.5, 0}}, ""});
  for (const auto& [name, k] : std::vector<std::pair<std::string, int>>{{"conv_k3_s1_p0", 3},
                                                                      {"conv_k3_s1_p1", 3},
                                                                      {"conv_k3_s2_p1", 3},
                                                                      {"conv_k1_s1_p0", 1},
                                                                      {"conv_k1_s2_p0", 1},
                                                                      {"conv_k7_s2_p3", 7}}) {
    v.push_back({name, name, {{"a", img, 5, 0.125, 0}, {"b", {4, 3, k, k}, 6, 0.0625, 0}}, ""});
  }
  for (const std::string name : {"tconv_k3_s1_p1", "tconv_k3_s2_p1"}) {
    v.push_back({name, name, {{"a", {1, 3, 5, 5}, 7, 0.125, 0}, {"b", {3, 2, 3, 3}, 8, 0.0625, 0}},
                 ""});
  }
  // seed 14: the 12 values include 0, negatives and the .5 ties -2.5, -0.5, 1.5, 3.5
  for (const std::string name : {"zeros_like", "ones_like", "relu", "sign", "square", "abs",
                                 "negative", "reciprocal", "round", "transpose"}) {
    v.push_back({name, name, {{"a", {3, 4}, 14, 0.25, 0}}, ""});
  }
  v.push_back({"sqrt", "sqrt", {{"a", {3, 4}, 14, 0.25, 4.0}}, ""});  // all positive
  v.push_back({"transpose_3d", "transpose", {{"a", {2, 3, 4}, 10, 1.0, 0}}, ""});
  // The design document's V1.20 command: input tag "input", result "output", answered by
  // status (V1.20 flow, see v120_tensor_square).
  v.push_back({"tensor_square", "tensor_square", {{"input", {1, 1, 4, 4}, 11, 0.5, 0}},
               R"({"cmd": "tensor_square"})", true});
  return v;
}

std::string request_for(const CommandSpec& c) {
  if (!c.request.empty()) return c.request;
  std::string tags;
  for (const auto& in : c.inputs) tags += (tags.empty() ? "" : ",") + in.tag;
  return R"({"cmd": ")" + c.cmd + R"(", "params": ")" + tags + R"("})";
}

struct Options {
  std::string script, workspace, layout = "python_session", session_id, out,
      scenario = "full";
  std::uint32_t warmup_ms = 300;
  std::uint32_t timeout_ms = 10000;
  std::uint32_t idle_ms = 0;
};

void run_design(const PythonSession& s, const Options& o) {
  // The design document's scenario: 4x3 of 1.5 @ 3x5 of 2.0 -> 4x5 of 9.0.
  Tensor a = Tensor::full(Shape(4, 3), 1.5, DType::FP32);
  Tensor b = Tensor::full(Shape(3, 5), 2.0, DType::FP32);
  auto t0 = Clock::now();
  s.send_tensor(a, "a");
  step("send_tensor:design.a", ms_since(t0));
  t0 = Clock::now();
  s.send_tensor(b, "b");
  step("send_tensor:design.b", ms_since(t0));
  t0 = Clock::now();
  Tensor r = s.fetch_tensor(R"({"cmd": "matmul", "params": "a,b"})", o.timeout_ms);
  step("fetch_tensor:design_matmul", ms_since(t0));
  const bool shape_ok = r.numel() != 0 && r.shape().n() == 1 && r.shape().c() == 1 &&
                        r.shape().h() == 4 && r.shape().w() == 5 && r.shape().ndim() == 2;
  bool values_ok = shape_ok && r.dtype() == DType::FP32;
  for (std::int64_t i = 0; values_ok && i < r.numel(); ++i) values_ok = r.get(i) == 9.0;
  check("design_matmul_shape", shape_ok, r.shape().to_string());
  check("design_matmul_values", values_ok);
  const std::string file = o.out + "/design_matmul.out.tsr";
  trkit::export_tensor(r, file);
  std::cout << "RESULT design_matmul " << file << std::endl;
}

void run_text(const PythonSession& s, const Options& o, const std::string& label,
              const std::string& request) {
  auto t0 = Clock::now();
  const std::string reply = s.fetch_response(request, o.timeout_ms);
  step("fetch_response:" + label, ms_since(t0));
  std::cout << "TEXT " << label << " " << reply << std::endl;
}

void run_command(const PythonSession& s, const Options& o, const CommandSpec& c);

void run_commands(const PythonSession& s, const Options& o) {
  for (const auto& c : command_specs()) run_command(s, o, c);
}

// The design document's V1.20 test flow: send input.tsr, write request.json in place
// (not atomically, no wait), then wait for output.tsr; the worker answers by status "done".
CommandSpec v120_tensor_square() {
  return {"v120_tensor_square", "tensor_square", {{"input", {1, 1, 4, 4}, 12, 0.5, 0}},
          R"({"cmd": "tensor_square"})", true};
}

void run_command(const PythonSession& s, const Options& o, const CommandSpec& c) {
  try {
    double send_ms = 0;
    for (const auto& in : c.inputs) {
      Tensor t = make_input(in.dims, in.seed, in.scale, in.offset);
      auto t0 = Clock::now();
      s.send_tensor(t, in.tag);
      send_ms += ms_since(t0);
      const std::string file = o.out + "/" + c.label + "." + in.tag + ".tsr";
      trkit::export_tensor(t, file);
      std::cout << "INPUT " << c.label << " " << in.tag << " " << file << std::endl;
    }
    step("send_tensor:" + c.label, send_ms);
    auto t0 = Clock::now();
    Tensor r;
    if (c.v120) {
      std::ofstream(s.session_dir() + "/request.json") << request_for(c);
      r = s.recv_tensor("output", o.timeout_ms);
      step("recv_tensor:" + c.label, ms_since(t0));
      // the status the worker answered with (it may still be settling: give it a moment)
      for (int i = 0; i < 100 && s.status() != "done"; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      std::cout << "TEXT status_after_" << c.label << " " << s.status() << std::endl;
    } else {
      r = s.fetch_tensor(request_for(c), o.timeout_ms);
      step("fetch_tensor:" + c.label, ms_since(t0));
    }
    const std::string file = o.out + "/" + c.label + ".out.tsr";
    trkit::export_tensor(r, file);
    std::cout << "RESULT " << c.label << " " << file << std::endl;
  } catch (const std::exception& e) {
    check("command_" + c.label, false, e.what());
  }
}

void run_bad_requests(const PythonSession& s, const Options& o) {
  // Wrong number of tensors (upstream answers it twice, leaving every later reply one behind).
  s.send_tensor(make_input({4, 3}, 1, 0.25, 0), "a");
  run_text(s, o, "bad_arity", R"({"cmd": "matmul", "params": "a"})");
  run_text(s, o, "good_after_bad_arity", R"({"cmd": "hello", "params": "world"})");
  run_text(s, o, "bad_missing_tag", R"({"cmd": "relu", "params": "no_such_tensor"})");
  run_text(s, o, "bad_unknown_cmd", R"({"cmd": "frobnicate", "params": "a"})");
  run_text(s, o, "bad_traversal_tag", R"({"cmd": "relu", "params": "../../etc/passwd"})");
  run_text(s, o, "bad_json", "this is { not json");
  // fetch_tensor on a bad request: the client waits for invalid.tsr until its time-out.
  bool threw = false;
  std::string what;
  auto t0 = Clock::now();
  try {
    s.fetch_tensor(R"({"cmd": "relu", "params": "no_such_tensor"})", 300);
  } catch (const trkit::TRException& e) {
    threw = true;
    what = e.what();
  }
  step("fetch_tensor:bad_request_timeout", ms_since(t0));
  check("fetch_tensor_bad_request_times_out",
        threw && what.find("invalid.tsr") != std::string::npos, what);
  // A good tensor request right after the bad ones gets its own answer.
  Tensor x = make_input({3, 4}, 9, 0.25, 0);
  t0 = Clock::now();
  s.send_tensor(x, "a");
  Tensor r = s.fetch_tensor(R"({"cmd": "relu", "params": "a"})", o.timeout_ms);
  step("fetch_tensor:good_after_bad", ms_since(t0));
  bool ok = r.numel() == x.numel() && r.shape() == x.shape();
  for (std::int64_t i = 0; ok && i < r.numel(); ++i) ok = r.get(i) == std::max(0.0, x.get(i));
  check("good_after_bad_relu", ok, r.shape().to_string());
}

bool wait_not_alive(const PythonSession& s, std::uint32_t timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    if (!s.is_alive()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return !s.is_alive();
}

void scenario_full(const Options& o) {
  auto t0 = Clock::now();
  auto sp = std::make_unique<PythonSession>(o.script, o.session_id, o.workspace, o.layout,
                                            o.warmup_ms);
  PythonSession& s = *sp;
  const std::string dir = s.session_dir();
  step("construct", ms_since(t0));
  check("session_dir_created", std::filesystem::is_directory(dir), dir);
  t0 = Clock::now();
  s.start();
  step("start", ms_since(t0));
  check("status_ready_after_start", s.status() == "ready" || s.status() == "running",
        s.status());
  run_design(s, o);
  if (o.scenario == "full") {
    run_text(s, o, "hello", R"({"cmd": "hello", "params": "world"})");
    run_text(s, o, "hi", R"({"cmd": "hi", "params": "world"})");
    run_text(s, o, "hello_quoted", R"({"cmd": "hello", "params": "say \"hi\" twice"})");
    // UTF-8 in, UTF-8 out: the reply's bytes are taken as they are (w\u00f6rld)
    run_text(s, o, "hello_utf8", "{\"cmd\": \"hello\", \"params\": \"w\xc3\xb6rld\"}");
    run_commands(s, o);
    run_bad_requests(s, o);
  }
  t0 = Clock::now();
  s.please_exit(o.timeout_ms);
  step("please_exit", ms_since(t0));
  const bool gone = wait_not_alive(s, o.timeout_ms);
  step("please_exit_until_terminated", ms_since(t0));
  check("please_exit_status_terminated", gone && s.status() == "terminated", s.status());
  t0 = Clock::now();
  sp.reset();  // the destructor: terminate() (the session is still "running"), then rm -r
  step("destructor", ms_since(t0));
  check("session_dir_removed", !std::filesystem::exists(dir), dir);
}

void scenario_terminate(const Options& o) {
  std::string dir;
  {
    PythonSession s(o.script, o.session_id, o.workspace, o.layout, o.warmup_ms);
    dir = s.session_dir();
    auto t0 = Clock::now();
    s.start();
    step("start", ms_since(t0));
    run_text(s, o, "hello", R"({"cmd": "hello", "params": "world"})");
    run_command(s, o, v120_tensor_square());
    // The same client then goes on with an ordinary request.
    run_text(s, o, "hello_after_v120", R"({"cmd": "hello", "params": "again"})");
    check("alive_before_terminate", s.is_alive(), s.status());
    if (o.idle_ms) {
      // An idle client, then one request (how long a poller takes to notice it), then idle
      // again before terminate() (does the worker notice "exit" within its 500 ms?).
      std::this_thread::sleep_for(std::chrono::milliseconds(o.idle_ms));
      run_text(s, o, "hello_after_idle", R"({"cmd": "hello", "params": "idle"})");
      std::this_thread::sleep_for(std::chrono::milliseconds(o.idle_ms));
    }
    t0 = Clock::now();
    s.terminate();
    step("terminate", ms_since(t0));
    const bool alive = s.is_alive();
    std::cout << "TEXT status_after_terminate " << s.status() << std::endl;
    check("terminate_then_not_alive", !alive, s.status());
  }
  check("session_dir_removed", !std::filesystem::exists(dir), dir);
}

int cmd_parse() {
  std::string in((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  std::cout << "[" << trkit::extract_params(in) << "]" << std::endl;
  return 0;
}

int usage() {
  std::cerr << "usage: session_driver run --script S --workspace W --layout L --session-id ID"
               " --out DIR [--scenario full|terminate|design] [--warmup-ms N] [--timeout-ms N]"
               " [--idle-ms N]\n       session_driver parse < response\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "parse") return cmd_parse();
  if (argc < 2 || std::string(argv[1]) != "run") return usage();
  Options o;
  std::map<std::string, std::function<void(const std::string&)>> setters{
      {"--script", [&](const std::string& v) { o.script = v; }},
      {"--workspace", [&](const std::string& v) { o.workspace = v; }},
      {"--layout", [&](const std::string& v) { o.layout = v; }},
      {"--session-id", [&](const std::string& v) { o.session_id = v; }},
      {"--out", [&](const std::string& v) { o.out = v; }},
      {"--scenario", [&](const std::string& v) { o.scenario = v; }},
      {"--warmup-ms", [&](const std::string& v) { o.warmup_ms = std::stoul(v); }},
      {"--timeout-ms", [&](const std::string& v) { o.timeout_ms = std::stoul(v); }},
      {"--idle-ms", [&](const std::string& v) { o.idle_ms = std::stoul(v); }},
  };
  for (int i = 2; i < argc; i += 2) {
    auto it = setters.find(argv[i]);
    if (it == setters.end() || i + 1 >= argc) return usage();
    it->second(argv[i + 1]);
  }
  if (o.script.empty() || o.workspace.empty() || o.session_id.empty() || o.out.empty()) {
    return usage();
  }
  try {
    std::filesystem::create_directories(o.out);
    if (o.scenario == "full" || o.scenario == "design") {
      scenario_full(o);
    } else if (o.scenario == "terminate") {
      scenario_terminate(o);
    } else {
      return usage();
    }
  } catch (const std::exception& e) {
    check("no_exception", false, e.what());
  }
  std::cout << "DONE " << (g_all_ok ? "ok" : "fail") << std::endl;
  return g_all_ok ? 0 : 1;
}
