// v3_session_driver: the V3 PythonSession model (python_session_v3.hpp) against a server,
// the way a V3.6 C++ program would use it, checking every answer.
//
//   v3_session_driver --python EXE --server SCRIPT --workspace DIR --scenario builtin|user|protocol
//                     [--wait-tries N]   (wait()'s 100 ms polls; 100 as the framework)
//                     [--settle 1]       (wait() also for request.json gone: a test aid)
//     builtin: the worker's built-in commands (add, matmul, print_tensor; unknown methods)
//     user:    a RenaissanceServer subclass with echo and two_outputs (tests/worker/
//              v3_style_server.py)
//     protocol: no tensors: two unknown methods in one session
//
// Output, one record per line: CHECK <name> ok | CHECK <name> FAIL <detail>; then
// STOP <seconds> <killed 0|1> <exit status>; DONE ok | DONE fail (exit status 0 when
// every CHECK passed).
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "python_session_v3.hpp"
#include "tsr3_raw.hpp"

namespace {

using trkit::DType3;
using trkit::PythonSessionV3;
using trkit::Tensor3;

bool g_all_ok = true;

void check(const std::string& name, bool ok, const std::string& detail = "") {
  if (!ok) g_all_ok = false;
  std::cout << "CHECK " << name << (ok ? " ok" : " FAIL " + detail) << std::endl;
}

// The exception message of f(), or "" if it did not throw.
std::string thrown(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

Tensor3 ramp(std::vector<std::int32_t> dims, float scale, float offset) {
  Tensor3 t = Tensor3::zeros(DType3::FP32, std::move(dims));
  for (std::int64_t i = 0; i < t.numel(); ++i) t.set_f32(i, (i % 17 - 8) * scale + offset);
  return t;
}

bool all_f32(const Tensor3& t, const std::function<float(std::int64_t)>& expected) {
  if (t.dtype != DType3::FP32) return false;
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    if (t.get_f32(i) != expected(i)) return false;
  }
  return true;
}

bool same(const Tensor3& a, const Tensor3& b) {
  return a.dtype == b.dtype && a.dims == b.dims && a.data == b.data;
}

void scenario_builtin(PythonSessionV3& s) {
  const Tensor3 a = ramp({2, 3, 4, 5}, 0.25f, 0.5f);
  // First a call that needs no torch: the server imports it meanwhile (each call has 10 s).
  const std::string unknown = thrown([&] { s.calculate("frobnicate", {a}); });
  check("unknown_method_fails",
        unknown == "PythonSession::fetch: Python operation failed: Unknown method: frobnicate",
        unknown);
  const Tensor3 b = ramp({2, 3, 4, 5}, -0.5f, 1.0f);
  const Tensor3 r1 = s.calculate("add", {a, b}, {{"alpha", "0.5"}, {"mode", "x"}});
  check("add_first", r1.dims == a.dims &&
                         all_f32(r1, [&](std::int64_t i) { return a.get_f32(i) + b.get_f32(i); }),
        r1.shape_string());
  // The upstream server's flaw: this call got the first call's output back.
  const Tensor3 ones = Tensor3::full_f32({2, 3, 4, 5}, 1.0f);
  const Tensor3 r2 = s.calculate("add", {ones, ones});
  check("add_second_is_its_own", all_f32(r2, [](std::int64_t) { return 2.0f; }),
        r2.shape_string());
  Tensor3 i32 = Tensor3::zeros(DType3::INT32, {1, 2, 2, 1});
  for (std::int32_t i = 0; i < 4; ++i) std::memcpy(i32.data.data() + 4 * i, &i, 4);
  const Tensor3 r3 = s.calculate("add", {i32, i32});
  bool i32_ok = r3.dtype == DType3::INT32 && r3.dims == i32.dims;
  for (std::int32_t i = 0; i32_ok && i < 4; ++i) {
    std::int32_t v;
    std::memcpy(&v, r3.data.data() + 4 * i, 4);
    i32_ok = v == 2 * i;
  }
  check("add_int32", i32_ok, r3.shape_string());
  const Tensor3 m = s.calculate("matmul", {Tensor3::full_f32({4, 3}, 1.5f),
                                           Tensor3::full_f32({3, 5}, 2.0f)});
  check("matmul_design", m.dims == std::vector<std::int32_t>{4, 5} &&
                             all_f32(m, [](std::int64_t) { return 9.0f; }),
        m.shape_string());
  const std::string text = s.print_tensor(Tensor3::full_f32({2}, 0.5f));
  check("print_tensor_text", text.rfind("tensor([0.5000, 0.5000])", 0) == 0, text);
  const Tensor3 r4 = s.calculate("add", {b, b});
  check("add_after_failure",
        all_f32(r4, [&](std::int64_t i) { return b.get_f32(i) + b.get_f32(i); }));
}

void scenario_user(PythonSessionV3& s) {
  const std::string unknown = thrown([&] { s.calculate("frobnicate", {}); });
  check("unknown_method_fails",
        unknown == "PythonSession::fetch: Python operation failed: Unknown method: frobnicate",
        unknown);
  Tensor3 bf16 = Tensor3::zeros(DType3::BF16, {2, 3});
  const std::uint16_t bits[6] = {0x3f80, 0xbf80, 0x3dcd, 0x7fc1, 0x0001, 0xff80};
  std::memcpy(bf16.data.data(), bits, sizeof bits);
  const Tensor3 e1 = s.calculate("echo", {bf16});
  check("echo_bf16_bit_exact", same(e1, bf16), e1.shape_string());
  Tensor3 i8 = Tensor3::zeros(DType3::INT8, {5});
  const std::int8_t vals[5] = {-128, -1, 0, 1, 127};
  std::memcpy(i8.data.data(), vals, 5);
  check("echo_int8_bit_exact", same(s.calculate("echo", {i8}), i8));
  Tensor3 nan = Tensor3::zeros(DType3::FP32, {});
  const std::uint32_t nan_bits = 0x7fa00001u;  // a signalling NaN with a payload
  std::memcpy(nan.data.data(), &nan_bits, 4);
  const Tensor3 e3 = s.calculate("echo", {nan});
  check("echo_fp32_nan_scalar_bit_exact", same(e3, nan), e3.shape_string());
  const Tensor3 a = ramp({3}, 1.0f, 0.0f), b = ramp({3}, 0.5f, 2.0f);
  const Tensor3 two = s.calculate("two_outputs", {a, b});
  check("two_outputs_returns_output_0",
        all_f32(two, [&](std::int64_t i) { return a.get_f32(i) + b.get_f32(i); }));
  const bool second_written = std::filesystem::exists(s.session_dir() + "/output_1.tsr");
  check("two_outputs_wrote_output_1", second_written);
  // three inputs, then one: the stale input_1/2 do not count
  s.calculate("echo", {a, b, i8});
  const Tensor3 one = s.calculate("echo", {b});
  check("echo_after_three_inputs", same(one, b) &&
                                       !std::filesystem::exists(s.session_dir() + "/output_1.tsr"));
}

// No tensors: two failing calls in one session, each with its own answer.
void scenario_protocol(PythonSessionV3& s) {
  for (const std::string method : {"frobnicate", "other"}) {
    const std::string what = thrown([&] { s.calculate(method, {}); });
    check("unknown_" + method,
          what == "PythonSession::fetch: Python operation failed: Unknown method: " + method,
          what);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> o{{"--scenario", "builtin"}};
  for (int i = 1; i + 1 < argc; i += 2) o[argv[i]] = argv[i + 1];
  if (!o.count("--python") || !o.count("--server") || !o.count("--workspace")) {
    std::cerr << "usage: v3_session_driver --python EXE --server SCRIPT --workspace DIR"
                 " [--scenario builtin|user|protocol] [--wait-tries N] [--settle 1]\n";
    return 2;
  }
  try {
    const int tries = o.count("--wait-tries") ? std::stoi(o["--wait-tries"]) : 100;
    PythonSessionV3 s(o["--python"], o["--server"], o["--workspace"], tries);
    s.set_settle(o.count("--settle") && o["--settle"] == "1");
    const std::string before = thrown([&] { s.calculate("add", {}); });
    check("calculate_before_start", before == "PythonSession::send: Session is not running",
          before);
    s.start();
    const std::string dir = s.session_dir();
    check("start_makes_an_empty_directory",
          std::filesystem::is_directory(dir) && std::filesystem::is_empty(dir), dir);
    const std::string twice = thrown([&] { s.start(); });
    check("start_twice", twice == "PythonSession::start: Session is already running", twice);
    if (o["--scenario"] == "user") {
      scenario_user(s);
    } else if (o["--scenario"] == "protocol") {
      scenario_protocol(s);
    } else {
      scenario_builtin(s);
    }
    check("one_process_for_the_session", s.launches() == 1, std::to_string(s.launches()));
    const double seconds = s.stop();
    std::cout << "STOP " << seconds << " " << s.killed() << " " << s.exit_status() << std::endl;
    check("stop_removes_the_directory", !std::filesystem::exists(dir), dir);
    check("stop_without_sigkill", !s.killed());
  } catch (const std::exception& e) {
    check("no_exception", false, e.what());
  }
  std::cout << "DONE " << (g_all_ok ? "ok" : "fail") << std::endl;
  return g_all_ok ? 0 : 1;
}
