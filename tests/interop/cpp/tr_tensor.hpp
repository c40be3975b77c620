// A minimal, independent model of the Tech Renaissance C++ framework's tensor I/O:
// Shape, Tensor, CpuBackend::export_tensor / import_tensor for TSR v1.
//
// Written from /work/shared/brief/tsr-v1-format.md (and the messages recorded in
// vectors/malformed/index.json), standard library only, C++17. It mimics the framework,
// quirks included:
//   * Shape cannot hold a zero dim: Shape(0) silently becomes a scalar, a zero dim in a
//     rank >= 2 Shape throws.
//   * import_tensor checks, in this order: file too small, magic, version, dtype, ndim,
//     element count (int64 product of all four dims, wrapping), negative dims, file size
//     (64 + total_elements * element_size, trailing bytes rejected too). Nothing else:
//     header_size, the reserved fields and the leading (unused) dims are not checked.
//   * The shape is rebuilt from the last ndim dims; then the tensor is allocated
//     ("Cannot allocate zero bytes") and Shape::numel() * element_size bytes are read
//     from offset 64 ("Failed to read complete tensor data").
//   * export_tensor writes the header field by field, then the payload, straight into
//     the target path (no temporary file).
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace trkit {

class TRException : public std::runtime_error {
 public:
  explicit TRException(const std::string& msg) : std::runtime_error(msg) {}
};

enum class DType : std::int32_t { FP32 = 1, INT8 = 2, INT32 = 3 };

inline std::int64_t dtype_size(DType d) {
  switch (d) {
    case DType::FP32: return 4;
    case DType::INT8: return 1;
    case DType::INT32: return 4;
  }
  throw TRException("Unknown dtype");
}

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::FP32: return "FP32";
    case DType::INT8: return "INT8";
    case DType::INT32: return "INT32";
  }
  return "UNKNOWN";
}

inline bool parse_dtype(const std::string& s, DType& out) {
  if (s == "FP32") { out = DType::FP32; return true; }
  if (s == "INT8") { out = DType::INT8; return true; }
  if (s == "INT32") { out = DType::INT32; return true; }
  return false;
}

// int64 arithmetic that wraps like the framework's (two's complement, no UB here).
inline std::int64_t wrap_mul(std::int64_t a, std::int64_t b) {
  return static_cast<std::int64_t>(static_cast<std::uint64_t>(a) * static_cast<std::uint64_t>(b));
}
inline std::int64_t wrap_add(std::int64_t a, std::int64_t b) {
  return static_cast<std::int64_t>(static_cast<std::uint64_t>(a) + static_cast<std::uint64_t>(b));
}

// NCHW shape with a logical rank 0..4, right-aligned: unused leading dims are 1.
class Shape {
 public:
  Shape() = default;  // scalar
  explicit Shape(std::int32_t w) {
    if (w == 0) return;  // the framework quirk: Shape(0) is a scalar
    check_positive({w});
    ndim_ = 1;
    dims_[3] = w;
  }
  Shape(std::int32_t h, std::int32_t w) {
    check_positive({h, w});
    ndim_ = 2;
    dims_[2] = h;
    dims_[3] = w;
  }
  Shape(std::int32_t c, std::int32_t h, std::int32_t w) {
    check_positive({c, h, w});
    ndim_ = 3;
    dims_[1] = c;
    dims_[2] = h;
    dims_[3] = w;
  }
  Shape(std::int32_t n, std::int32_t c, std::int32_t h, std::int32_t w) {
    check_positive({n, c, h, w});
    ndim_ = 4;
    dims_[0] = n;
    dims_[1] = c;
    dims_[2] = h;
    dims_[3] = w;
  }

  // Build from a list of logical dims (rank = size), through the constructors above.
  static Shape from_dims(const std::vector<std::int32_t>& d) {
    switch (d.size()) {
      case 0: return Shape();
      case 1: return Shape(d[0]);
      case 2: return Shape(d[0], d[1]);
      case 3: return Shape(d[0], d[1], d[2]);
      case 4: return Shape(d[0], d[1], d[2], d[3]);
      default: throw TRException("[Shape] at most 4 dimensions are supported");
    }
  }

  std::int32_t ndim() const { return ndim_; }
  std::int32_t n() const { return dims_[0]; }
  std::int32_t c() const { return dims_[1]; }
  std::int32_t h() const { return dims_[2]; }
  std::int32_t w() const { return dims_[3]; }
  // Logical dim i (0 <= i < ndim).
  std::int32_t dim(std::int32_t i) const {
    if (i < 0 || i >= ndim_) throw TRException("[Shape] dim index out of range");
    return dims_[4 - ndim_ + i];
  }
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (std::int32_t d : dims_) n = wrap_mul(n, d);
    return n;
  }
  std::string to_string() const {
    std::string s = "(";
    for (std::int32_t i = 0; i < ndim_; ++i) {
      if (i) s += ",";
      s += std::to_string(dim(i));
    }
    return s + ")";
  }
  bool operator==(const Shape& o) const {
    return ndim_ == o.ndim_ && std::memcmp(dims_, o.dims_, sizeof(dims_)) == 0;
  }
  bool operator!=(const Shape& o) const { return !(*this == o); }

 private:
  static void check_positive(std::initializer_list<std::int32_t> dims) {
    for (std::int32_t d : dims) {
      if (d <= 0) {
        std::string s;
        for (std::int32_t x : dims) s += (s.empty() ? "" : ",") + std::to_string(x);
        throw TRException("[Shape] Dimension must be positive, got (" + s + ")");
      }
    }
    // The framework's Shape::validate_dims: the running product, after each dim, must
    // not exceed INT64_MAX / 1000.
    std::int64_t product = 1;
    for (std::int32_t d : dims) {
      product = wrap_mul(product, d);
      if (product > INT64_MAX / 1000) {
        throw TRException("[Shape] Shape dimensions are too large");
      }
    }
  }

  std::int32_t dims_[4] = {1, 1, 1, 1};
  std::int32_t ndim_ = 0;
};

// A host tensor. A default-constructed Tensor is empty (numel() == 0), as the framework's
// test code expects from a failed fetch.
class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(const Shape& shape, DType dtype) {
    const std::int64_t bytes = wrap_mul(shape.numel(), dtype_size(dtype));
    if (bytes == 0) throw TRException("Cannot allocate zero bytes");
    if (bytes < 0) throw TRException("Memory allocation failed: negative size");
    Tensor t;
    t.shape_ = shape;
    t.dtype_ = dtype;
    t.storage_.assign(static_cast<std::size_t>(bytes), 0);
    t.valid_ = true;
    return t;
  }

  static Tensor full(const Shape& shape, double value, DType dtype) {
    Tensor t = empty(shape, dtype);
    for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, value);
    return t;
  }

  bool valid() const { return valid_; }
  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  std::int64_t numel() const { return valid_ ? shape_.numel() : 0; }
  std::size_t memory_size() const { return storage_.size(); }
  std::uint8_t* data() { return storage_.data(); }
  const std::uint8_t* data() const { return storage_.data(); }

  // Element access as double (FP32 widened; INT8/INT32 exact).
  double get(std::int64_t i) const {
    const std::uint8_t* p = storage_.data() + i * dtype_size(dtype_);
    switch (dtype_) {
      case DType::FP32: { float f; std::memcpy(&f, p, 4); return f; }
      case DType::INT8: { std::int8_t v; std::memcpy(&v, p, 1); return v; }
      case DType::INT32: { std::int32_t v; std::memcpy(&v, p, 4); return v; }
    }
    return 0.0;
  }
  void set(std::int64_t i, double value) {
    std::uint8_t* p = storage_.data() + i * dtype_size(dtype_);
    switch (dtype_) {
      case DType::FP32: { float f = static_cast<float>(value); std::memcpy(p, &f, 4); break; }
      case DType::INT8: { auto v = static_cast<std::int8_t>(value); std::memcpy(p, &v, 1); break; }
      case DType::INT32: { auto v = static_cast<std::int32_t>(value); std::memcpy(p, &v, 4); break; }
    }
  }

 private:
  Shape shape_;
  DType dtype_ = DType::FP32;
  std::vector<std::uint8_t> storage_;
  bool valid_ = false;
};

namespace detail {
inline std::int32_t le32(const std::uint8_t* p) {
  std::uint32_t v = static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
                    (static_cast<std::uint32_t>(p[2]) << 16) |
                    (static_cast<std::uint32_t>(p[3]) << 24);
  return static_cast<std::int32_t>(v);
}
inline std::int64_t le64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return static_cast<std::int64_t>(v);
}
inline void put32(std::ostream& os, std::int32_t x) {
  auto v = static_cast<std::uint32_t>(x);
  char b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  os.write(b, 4);
}
inline void put64(std::ostream& os, std::int64_t x) {
  auto v = static_cast<std::uint64_t>(x);
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  os.write(b, 8);
}
}  // namespace detail

constexpr std::int64_t kHeaderSize = 64;

// CpuBackend::export_tensor: header field by field, then the payload, into `path` itself.
inline void export_tensor(const Tensor& tensor, const std::string& path) {
  if (!tensor.valid()) throw TRException("[export_tensor] Cannot export an empty tensor");
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) throw TRException("Failed to open file for writing: " + path);
  const Shape& s = tensor.shape();
  file.write("TSR!", 4);                                    // magic
  detail::put32(file, 1);                                   // version
  detail::put32(file, static_cast<std::int32_t>(kHeaderSize));  // header_size
  detail::put32(file, 0);                                   // reserved_1
  detail::put32(file, static_cast<std::int32_t>(tensor.dtype()));  // dtype
  detail::put32(file, s.ndim());                            // ndim
  detail::put32(file, s.n());                               // dims[0..3], right-aligned
  detail::put32(file, s.c());
  detail::put32(file, s.h());
  detail::put32(file, s.w());
  detail::put64(file, s.numel());                           // total_elements
  detail::put64(file, 0);                                   // reserved_2
  detail::put64(file, 0);                                   // reserved_3
  file.write(reinterpret_cast<const char*>(tensor.data()),
             static_cast<std::streamsize>(tensor.memory_size()));
  file.flush();
  if (!file) throw TRException("Failed to write tensor data to file: " + path);
}

// CpuBackend::import_tensor: the framework's checks in the framework's order.
inline Tensor import_tensor(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw TRException("Failed to open file for reading: " + path);
  file.seekg(0, std::ios::end);
  const std::int64_t file_size = static_cast<std::int64_t>(file.tellg());
  file.seekg(0, std::ios::beg);
  if (file_size < kHeaderSize) {
    throw TRException("File too small to contain valid TSR header: " + path);
  }
  std::uint8_t h[kHeaderSize];
  file.read(reinterpret_cast<char*>(h), kHeaderSize);
  if (file.gcount() != kHeaderSize) throw TRException("Failed to read TSR header: " + path);

  // 1. magic
  if (std::memcmp(h, "TSR!", 4) != 0) {
    throw TRException("Invalid TSR file magic number. Expected 'TSR!', got: " +
                      std::string(reinterpret_cast<const char*>(h), 4));
  }
  // 2. version
  const std::int32_t version = detail::le32(h + 4);
  if (version != 1) {
    throw TRException("Unsupported TSR format version: " + std::to_string(version) +
                      ". Supported version: 1");
  }
  // (header_size at offset 8 and reserved_1 at 12 are not checked)
  // 3. dtype
  const std::int32_t dtype_value = detail::le32(h + 16);
  if (dtype_value < 1 || dtype_value > 3) {
    throw TRException("Unsupported dtype value: " + std::to_string(dtype_value) +
                      ". Supported values: 1 (FP32), 2 (INT8), 3 (INT32)");
  }
  const auto dtype = static_cast<DType>(dtype_value);
  // 4. ndim
  const std::int32_t ndim = detail::le32(h + 20);
  if (ndim < 0 || ndim > 4) {
    throw TRException("Invalid ndim value: " + std::to_string(ndim) + ". Must be between 0 and 4");
  }
  std::int32_t dims[4];
  for (int i = 0; i < 4; ++i) dims[i] = detail::le32(h + 24 + 4 * i);
  const std::int64_t total_elements = detail::le64(h + 40);
  // (reserved_2 and reserved_3 are not checked)
  // 5. element count over all four dims, in wrapping int64
  std::int64_t computed = 1;
  for (std::int32_t d : dims) computed = wrap_mul(computed, d);
  if (total_elements != computed) {
    throw TRException("Element count mismatch. Header claims " + std::to_string(total_elements) +
                      " but dimensions suggest " + std::to_string(computed));
  }
  // 6. negative dims
  for (int i = 0; i < 4; ++i) {
    if (dims[i] < 0) {
      throw TRException("Invalid dimension value at index " + std::to_string(i) + ": " +
                        std::to_string(dims[i]));
    }
  }
  // 7. exact file size
  const std::int64_t expected = wrap_add(kHeaderSize, wrap_mul(total_elements, dtype_size(dtype)));
  if (file_size != expected) {
    throw TRException("File size mismatch. Expected " + std::to_string(expected) + " bytes, got " +
                      std::to_string(file_size) + " bytes");
  }
  // Shape from the last ndim dims (the Shape constructors may throw or, for Shape(0),
  // silently give a scalar).
  std::vector<std::int32_t> logical(dims + (4 - ndim), dims + 4);
  const Shape shape = Shape::from_dims(logical);
  // Allocation, then one read of Shape::numel() * element_size bytes from offset 64.
  // (To stay safe on hostile headers, a size that the file cannot supply is reported as the
  // short read it would become, without allocating it first.)
  const std::int64_t bytes = wrap_mul(shape.numel(), dtype_size(dtype));
  if (bytes == 0) throw TRException("Cannot allocate zero bytes");
  if (bytes < 0 || bytes > file_size - kHeaderSize) {
    throw TRException("Failed to read complete tensor data from file: " + path);
  }
  Tensor t = Tensor::empty(shape, dtype);
  file.read(reinterpret_cast<char*>(t.data()), static_cast<std::streamsize>(bytes));
  if (file.gcount() != bytes) {
    throw TRException("Failed to read complete tensor data from file: " + path);
  }
  return t;
}

}  // namespace trkit
