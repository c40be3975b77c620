// tsr_cpp: command-line front end of the C++17 conformance kit (reader, writer, SHA-256).
//
//   tsr_cpp read FILE...        one line per file, in order:
//       accept: <DTYPE> <shape> numel=N sha256=<sha256 of the read tensor's bytes> sum=S
//       reject: <message of the exception import_tensor threw, non-printable bytes as \xNN>
//   tsr_cpp values FILE         the read line, then (on accept) one line per element:
//                               FP32 "<8 hex digits of the bits> <%.9g>", INT8/INT32 "<int>"
//   tsr_cpp write DTYPE OUT SOURCE [DIMS...]
//       builds Shape(DIMS...) (the framework's constructors, quirks included) and a tensor
//       filled from SOURCE, then export_tensor(tensor, OUT). SOURCE is
//         ramp      FP32: i*0.5f - 3.25f in float32; INT8/INT32: (i*7 % 23) - 11
//         fill:V    every element V (converted like the framework's Tensor::full)
//         stdin     numel * element_size raw little-endian bytes read from standard input
//       prints "wrote: <DTYPE> <shape> numel=N file_size=B", or "error: <message>" (exit 1)
//   tsr_cpp sha256 FILE...      hex SHA-256 of each file's bytes ("-" is standard input)
//
// Exit status: 0 on success (a reject is a successful answer), 1 on a failed write,
// 2 on usage errors.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "sha256.hpp"
#include "tr_tensor.hpp"

namespace {

using trkit::DType;
using trkit::Shape;
using trkit::Tensor;

std::string format_sum(const Tensor& t) {
  std::ostringstream os;
  if (t.dtype() == DType::FP32) {
    double s = 0.0;
    for (std::int64_t i = 0; i < t.numel(); ++i) s += t.get(i);
    os << s;
  } else {
    long long s = 0;
    for (std::int64_t i = 0; i < t.numel(); ++i) s += static_cast<long long>(t.get(i));
    os << s;
  }
  return os.str();
}

std::string accept_line(const Tensor& t) {
  return std::string("accept: ") + trkit::dtype_name(t.dtype()) + " " + t.shape().to_string() +
         " numel=" + std::to_string(t.numel()) +
         " sha256=" + trkit::Sha256::hex(t.data(), t.memory_size()) + " sum=" + format_sum(t);
}

// One output line per file: bytes outside printable ASCII (and the backslash) in a message
// (the magic message quotes the file's raw bytes) are written as \xNN.
std::string printable(const std::string& s) {
  std::string out;
  char buf[8];
  for (unsigned char c : s) {
    if (c < 0x20 || c >= 0x7f || c == '\\') {
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

// Returns the read line; fills `out` on accept.
std::string read_one(const std::string& path, Tensor* out) {
  try {
    Tensor t = trkit::import_tensor(path);
    std::string line = accept_line(t);
    if (out) *out = std::move(t);
    return line;
  } catch (const std::exception& e) {
    return "reject: " + printable(e.what());
  }
}

int cmd_read(const std::vector<std::string>& files) {
  for (const auto& f : files) std::cout << read_one(f, nullptr) << "\n";
  return 0;
}

int cmd_values(const std::string& file) {
  Tensor t;
  std::cout << read_one(file, &t) << "\n";
  if (!t.valid()) return 0;
  char buf[64];
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    if (t.dtype() == DType::FP32) {
      std::uint32_t bits;
      std::memcpy(&bits, t.data() + 4 * i, 4);
      std::snprintf(buf, sizeof buf, "%08x %.9g", bits, t.get(i));
      std::cout << buf << "\n";
    } else {
      std::cout << static_cast<long long>(t.get(i)) << "\n";
    }
  }
  return 0;
}

void fill_ramp(Tensor& t) {
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    if (t.dtype() == DType::FP32) {
      const float v = static_cast<float>(i) * 0.5f - 3.25f;
      std::memcpy(t.data() + 4 * i, &v, 4);
    } else {
      t.set(i, static_cast<double>((i * 7) % 23 - 11));
    }
  }
}

int cmd_write(const std::vector<std::string>& args) {
  // args: DTYPE OUT SOURCE DIMS...
  DType dtype;
  if (!trkit::parse_dtype(args[0], dtype)) {
    std::cout << "error: unknown dtype " << args[0] << "\n";
    return 2;
  }
  const std::string& out = args[1];
  const std::string& source = args[2];
  try {
    std::vector<std::int32_t> dims;
    for (std::size_t i = 3; i < args.size(); ++i) dims.push_back(std::stoi(args[i]));
    const Shape shape = Shape::from_dims(dims);
    Tensor t = Tensor::empty(shape, dtype);
    if (source == "ramp") {
      fill_ramp(t);
    } else if (source.rfind("fill:", 0) == 0) {
      t = Tensor::full(shape, std::stod(source.substr(5)), dtype);
    } else if (source == "stdin") {
      std::cin.read(reinterpret_cast<char*>(t.data()), static_cast<std::streamsize>(t.memory_size()));
      if (static_cast<std::size_t>(std::cin.gcount()) != t.memory_size()) {
        throw trkit::TRException("short read on standard input");
      }
    } else {
      std::cout << "error: unknown source " << source << "\n";
      return 2;
    }
    trkit::export_tensor(t, out);
    std::cout << "wrote: " << trkit::dtype_name(dtype) << " " << shape.to_string()
              << " numel=" << t.numel() << " file_size=" << (64 + t.memory_size()) << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cout << "error: " << e.what() << "\n";
    return 1;
  }
}

int cmd_sha256(const std::vector<std::string>& files) {
  for (const auto& f : files) {
    trkit::Sha256 h;
    std::vector<char> buf(1 << 16);
    std::ifstream in;
    std::istream* is = &std::cin;
    if (f != "-") {
      in.open(f, std::ios::binary);
      if (!in) {
        std::cout << "error: cannot open " << f << "\n";
        return 1;
      }
      is = &in;
    }
    while (*is) {
      is->read(buf.data(), static_cast<std::streamsize>(buf.size()));
      h.update(buf.data(), static_cast<std::size_t>(is->gcount()));
    }
    std::cout << h.hexdigest() << "\n";
  }
  return 0;
}

int usage() {
  std::cerr << "usage: tsr_cpp read FILE... | values FILE | write DTYPE OUT SOURCE [DIMS...]"
               " | sha256 FILE...\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::ios::sync_with_stdio(false);
  if (argc < 2) return usage();
  const std::string cmd = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (cmd == "read" && !args.empty()) return cmd_read(args);
  if (cmd == "values" && args.size() == 1) return cmd_values(args[0]);
  if (cmd == "write" && args.size() >= 3 && args.size() <= 7) return cmd_write(args);
  if (cmd == "sha256" && !args.empty()) return cmd_sha256(args);
  return usage();
}
