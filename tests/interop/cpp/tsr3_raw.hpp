// TSR V3 RAW, as the V3 PythonSession moves tensors: cpu.export_tensor(t, path, false) and
// cpu.import_tensor(path, false) (the plain read path). Written from
// /work/shared/brief/tsr-v3-format.md; standard library only, C++17. RAW only (the session
// never compresses); messages as the framework's.
//
// Header (128 bytes, little-endian): "TSR3", u32 header_size 128, u32 version 3, u32
// file_mode 0, u8 dtype (1 FP32, 2 BF16, 3 INT32, 4 INT8), u8 ndim, 2 reserved bytes,
// i32 dims[4] right-aligned with unused slots 0, u64 numel, u64 data_offset 256,
// u64 payload_size, u64 raw_data_size, u32 crc32 (zlib CRC-32 of the data), u32 reserved,
// 52 bytes of padding; then 128 zero bytes; the data at 256.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "tr_tensor.hpp"

namespace trkit {

enum class DType3 : std::uint8_t { FP32 = 1, BF16 = 2, INT32 = 3, INT8 = 4 };

inline std::size_t dtype3_size(DType3 d) {
  switch (d) {
    case DType3::FP32: return 4;
    case DType3::BF16: return 2;
    case DType3::INT32: return 4;
    case DType3::INT8: return 1;
  }
  throw TRException("Unknown dtype");
}

inline const char* dtype3_name(DType3 d) {
  switch (d) {
    case DType3::FP32: return "FP32";
    case DType3::BF16: return "BF16";
    case DType3::INT32: return "INT32";
    case DType3::INT8: return "INT8";
  }
  return "INVALID";
}

inline std::uint32_t crc32(const std::uint8_t* data, std::size_t n) {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

// A tensor as the session sees it: dtype, logical dims (rank 0..4), raw little-endian data.
struct Tensor3 {
  DType3 dtype = DType3::FP32;
  std::vector<std::int32_t> dims;
  std::vector<std::uint8_t> data;

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (std::int32_t d : dims) n *= d;
    return n;
  }
  std::string shape_string() const {
    std::string s = "[";
    for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? "," : "") + std::to_string(dims[i]);
    return s + "]";
  }
  float get_f32(std::int64_t i) const {
    float v;
    std::memcpy(&v, data.data() + 4 * i, 4);
    return v;
  }
  void set_f32(std::int64_t i, float v) { std::memcpy(data.data() + 4 * i, &v, 4); }

  static Tensor3 zeros(DType3 dtype, std::vector<std::int32_t> dims) {
    Tensor3 t;
    t.dtype = dtype;
    t.dims = std::move(dims);
    t.data.assign(static_cast<std::size_t>(t.numel()) * dtype3_size(dtype), 0);
    return t;
  }
  static Tensor3 full_f32(std::vector<std::int32_t> dims, float v) {
    Tensor3 t = zeros(DType3::FP32, std::move(dims));
    for (std::int64_t i = 0; i < t.numel(); ++i) t.set_f32(i, v);
    return t;
  }
};

namespace detail3 {
template <class T>
void put(std::vector<std::uint8_t>& b, std::size_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof v);
}
template <class T>
T get(const std::vector<std::uint8_t>& b, std::size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}
}  // namespace detail3

// export_tensor(t, path, false): the header, 128 zero bytes, the data; straight into path.
inline void export_tensor_v3(const Tensor3& t, const std::string& path) {
  using detail3::put;
  if (t.dims.size() > 4) throw TRException("Invalid tensor ndim");
  std::vector<std::uint8_t> head(256, 0);
  std::memcpy(head.data(), "TSR3", 4);
  put<std::uint32_t>(head, 4, 128);
  put<std::uint32_t>(head, 8, 3);
  put<std::uint32_t>(head, 12, 0);
  head[16] = static_cast<std::uint8_t>(t.dtype);
  head[17] = static_cast<std::uint8_t>(t.dims.size());
  for (std::size_t i = 0; i < t.dims.size(); ++i) {
    put<std::int32_t>(head, 20 + 4 * (4 - t.dims.size() + i), t.dims[i]);
  }
  put<std::uint64_t>(head, 36, static_cast<std::uint64_t>(t.numel()));
  put<std::uint64_t>(head, 44, 256);
  put<std::uint64_t>(head, 52, t.data.size());
  put<std::uint64_t>(head, 60, t.data.size());
  put<std::uint32_t>(head, 68, crc32(t.data.data(), t.data.size()));
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw TRException("Failed to open file for writing: " + path);
  f.write(reinterpret_cast<const char*>(head.data()), 256);
  f.write(reinterpret_cast<const char*>(t.data.data()), static_cast<std::streamsize>(t.data.size()));
  if (!f) throw TRException("Failed to write TSR file: " + path);
}

// import_tensor(path, false): the importer's checks in order (RAW read path).
inline Tensor3 import_tensor_v3(const std::string& path) {
  using detail3::get;
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw TRException("File not found: " + path);
  const std::uint64_t size = static_cast<std::uint64_t>(f.tellg());
  if (size < 128) {
    throw TRException("File too small to be a valid TSR file: " + path +
                      " (size=" + std::to_string(size) + ", need at least 128)");
  }
  std::vector<std::uint8_t> h(128);
  f.seekg(0);
  f.read(reinterpret_cast<char*>(h.data()), 128);
  if (f.gcount() != 128) throw TRException("Failed to read TSR header from: " + path);
  if (std::memcmp(h.data(), "TSR3", 4) != 0) {
    throw TRException("Invalid TSR magic number (expected 'TSR3')");
  }
  const auto version = get<std::uint32_t>(h, 8);
  if (version != 3) {
    throw TRException("Unsupported TSR version: " + std::to_string(version) +
                      " (this implementation supports version 3)");
  }
  const auto header_size = get<std::uint32_t>(h, 4);
  if (header_size != 128) {
    throw TRException("Invalid TSR header size: " + std::to_string(header_size) + " (expected 128)");
  }
  const auto mode = get<std::uint32_t>(h, 12);
  if (mode != 0) throw TRException("this kit reads RAW only (file_mode " + std::to_string(mode) + ")");
  const std::uint8_t dtype = h[16], ndim = h[17];
  if (dtype < 1 || dtype > 4) {
    throw TRException("Invalid TSR dtype: " + std::to_string(dtype) +
                      " (expected 1=FP32, 2=BF16, 3=INT32, 4=INT8)");
  }
  if (ndim > 4) throw TRException("Invalid TSR ndim: " + std::to_string(ndim) + " (expected 0-4)");
  const auto data_offset = get<std::uint64_t>(h, 44);
  if (data_offset != 256) {
    throw TRException("Invalid data_offset for RAW mode: " + std::to_string(data_offset) +
                      " (expected 256)");
  }
  std::int64_t product = 1;
  std::int32_t dims[4];
  for (int i = 0; i < 4; ++i) {
    dims[i] = get<std::int32_t>(h, 20 + 4 * i);
    if (dims[i] < 0) {
      throw TRException("Negative dimension in TSR file: dims[" + std::to_string(i) +
                        "]=" + std::to_string(dims[i]));
    }
    if (dims[i] > 0) product *= dims[i];
  }
  const auto numel = get<std::uint64_t>(h, 36);
  if (product != static_cast<std::int64_t>(numel)) {
    throw TRException("TSR numel mismatch: dims product=" + std::to_string(product) +
                      ", header.numel=" + std::to_string(numel));
  }
  const std::size_t elem = dtype3_size(static_cast<DType3>(dtype));
  const auto raw = get<std::uint64_t>(h, 60);
  if (numel * elem != raw) {
    throw TRException("TSR raw_data_size mismatch: expected=" + std::to_string(numel * elem) +
                      " (" + std::to_string(numel) + " * " + std::to_string(elem) +
                      "), got=" + std::to_string(raw));
  }
  const auto payload = get<std::uint64_t>(h, 52);
  if (size < data_offset + payload) {
    throw TRException("TSR file truncated: " + path + " (file_size=" + std::to_string(size) +
                      ", required=" + std::to_string(data_offset + payload) + ")");
  }
  Tensor3 t;
  t.dtype = static_cast<DType3>(dtype);
  for (int i = 4 - ndim; i < 4; ++i) t.dims.push_back(dims[i]);
  t.data.assign(static_cast<std::size_t>(t.numel()) * elem, 0);
  if (t.data.empty()) throw TRException("Cannot allocate 0 bytes");
  // The framework reads raw_data_size bytes into this buffer whatever its size (a heap
  // overrun when the dims outside ndim disagree); the kit refuses instead.
  if (t.data.size() != raw) throw TRException("kit: shape and raw_data_size disagree");
  f.seekg(256);
  f.read(reinterpret_cast<char*>(t.data.data()), static_cast<std::streamsize>(raw));
  if (static_cast<std::uint64_t>(f.gcount()) != raw) {
    throw TRException("Failed to read complete data from TSR file");
  }
  const auto crc = get<std::uint32_t>(h, 68);
  if (crc != 0 && crc != crc32(t.data.data(), t.data.size())) {
    throw TRException("CRC32 mismatch: file may be corrupted");
  }
  return t;
}

}  // namespace trkit
