// safetensors reading, writing, inspection and content hashing (see safetensors.h).
#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "core/util/fs.h"
#include "core/util/json.h"
#include "core/util/sha256.h"
#include "core/util/strings.h"

namespace lf::core {
namespace {

using nlohmann::json;

struct DtypeRow {
  const char* name;
  at::ScalarType type;
};
constexpr DtypeRow kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
    {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},    {"BOOL", at::kBool}};

void require_little_endian() {
  const uint16_t probe = 1;
  unsigned char first = 0;
  std::memcpy(&first, &probe, 1);
  if (first != 1)
    throw std::runtime_error("safetensors: this host is big-endian; the format is little-endian "
                             "and byte swapping is not implemented");
}

// Random access to the bytes of a file or of a string, so one parser serves both.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual uint64_t size() const = 0;
  // Reads exactly n bytes at `offset` (the caller has bounded offset + n by size()).
  virtual void read(uint64_t offset, void* dst, uint64_t n) const = 0;
  virtual const std::string& name() const = 0;
};

class FileSource : public ByteSource {
 public:
  explicit FileSource(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw std::runtime_error(lf::str(path_, ": cannot open: ", std::strerror(errno)));
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd_);
      throw std::runtime_error(lf::str(path_, ": not a regular file"));
    }
    size_ = static_cast<uint64_t>(st.st_size);
  }
  ~FileSource() override { ::close(fd_); }
  FileSource(const FileSource&) = delete;
  FileSource& operator=(const FileSource&) = delete;

  uint64_t size() const override { return size_; }
  const std::string& name() const override { return path_; }
  void read(uint64_t offset, void* dst, uint64_t n) const override {
    auto* out = static_cast<char*>(dst);
    while (n > 0) {
      const size_t chunk = static_cast<size_t>(std::min<uint64_t>(n, 1u << 30));
      ssize_t got = ::pread(fd_, out, chunk, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0)
        throw std::runtime_error(lf::str(path_, ": read of ", n, " bytes at offset ", offset,
                                     " failed: ", got < 0 ? std::strerror(errno) : "end of file",
                                     " (was the file truncated while reading?)"));
      out += got;
      offset += static_cast<uint64_t>(got);
      n -= static_cast<uint64_t>(got);
    }
  }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

class MemorySource : public ByteSource {
 public:
  MemorySource(const std::string& bytes, std::string name) : bytes_(bytes), name_(std::move(name)) {}
  uint64_t size() const override { return bytes_.size(); }
  const std::string& name() const override { return name_; }
  void read(uint64_t offset, void* dst, uint64_t n) const override {
    std::memcpy(dst, bytes_.data() + offset, static_cast<size_t>(n));
  }

 private:
  const std::string& bytes_;
  std::string name_;
};

uint64_t element_size(const std::string& dtype) {
  return at::elementSize(safetensors_dtype_to_scalar(dtype, "?"));
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

uint64_t json_offset(const json& v, const std::string& what) {
  if (!v.is_number_unsigned())
    throw std::invalid_argument(lf::str(what, " must be a non-negative integer, found ", json_excerpt(v)));
  return v.get<uint64_t>();
}

SafetensorsEntry parse_entry(const std::string& src, const std::string& name, const json& e,
                             uint64_t data_bytes) {
  const std::string where = lf::str(src, ": tensor '", excerpt(name), "'");
  if (!e.is_object()) throw std::invalid_argument(lf::str(where, ": entry is not a JSON object"));
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!e.contains(key)) throw std::invalid_argument(lf::str(where, ": entry has no \"", key, "\""));
  SafetensorsEntry out;
  out.name = name;
  if (!e["dtype"].is_string())
    throw std::invalid_argument(lf::str(where, ": dtype must be a string, found ",
                                        json_excerpt(e["dtype"])));
  out.dtype = e["dtype"].get<std::string>();
  const uint64_t esize = at::elementSize(safetensors_dtype_to_scalar(out.dtype, where));
  const json& shape = e["shape"];
  if (!shape.is_array() || shape.size() > 64)
    throw std::invalid_argument(lf::str(where, ": shape must be an array of at most 64 sizes, found ",
                                    json_excerpt(shape)));
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& d : shape) {
    const uint64_t n = json_offset(d, where + " shape entry");
    if (n > static_cast<uint64_t>(INT64_MAX))
      throw std::invalid_argument(lf::str(where, ": shape entry ", n, " is too large"));
    overflow |= __builtin_mul_overflow(numel, n, &numel);
    out.shape.push_back(static_cast<int64_t>(n));
  }
  const json& off = e["data_offsets"];
  if (!off.is_array() || off.size() != 2)
    throw std::invalid_argument(lf::str(where, ": data_offsets must be [begin, end], found ",
                                    json_excerpt(off)));
  out.begin = json_offset(off[0], where + " data_offsets[0]");
  out.end = json_offset(off[1], where + " data_offsets[1]");
  if (out.end < out.begin)
    throw std::invalid_argument(lf::str(where, ": data_offsets [", out.begin, ", ", out.end,
                                    "] end before begin"));
  if (out.end > data_bytes)
    throw std::invalid_argument(lf::str(where, ": data_offsets [", out.begin, ", ", out.end,
                                    "] reach past the data section, which holds ", data_bytes,
                                    " bytes (truncated file?)"));
  uint64_t expected = 0;
  overflow |= __builtin_mul_overflow(numel, esize, &expected);
  if (overflow || expected != out.nbytes())
    throw std::invalid_argument(lf::str(where, ": shape ", shape_string(out.shape), " of ", out.dtype,
                                    " needs ", overflow ? std::string("more than 2^64")
                                                        : std::to_string(expected),
                                    " bytes but data_offsets [", out.begin, ", ", out.end,
                                    "] hold ", out.nbytes()));
  return out;
}

SafetensorsHeader parse_header(const ByteSource& src) {
  require_little_endian();
  const std::string& name = src.name();
  SafetensorsHeader h;
  h.file_bytes = src.size();
  if (h.file_bytes < 8)
    throw std::invalid_argument(lf::str(name, ": the file holds ", h.file_bytes,
                                    " bytes, fewer than the 8-byte header length; not a "
                                    "safetensors file (or truncated)"));
  unsigned char len_bytes[8];
  src.read(0, len_bytes, 8);
  for (int i = 7; i >= 0; --i) h.header_bytes = (h.header_bytes << 8) | len_bytes[i];
  if (h.header_bytes > h.file_bytes - 8)
    throw std::invalid_argument(lf::str(name, ": header claims ", h.header_bytes,
                                    " bytes but the file holds ", h.file_bytes - 8,
                                    " after the 8-byte length (truncated, or not a safetensors "
                                    "file)"));
  if (h.header_bytes > kMaxSafetensorsHeaderBytes)
    throw std::invalid_argument(lf::str(name, ": header claims ", h.header_bytes,
                                    " bytes, above the limit of ", kMaxSafetensorsHeaderBytes));
  std::string text(static_cast<size_t>(h.header_bytes), '\0');
  src.read(8, text.data(), h.header_bytes);
  JsonLimits limits;
  limits.max_bytes = kMaxSafetensorsHeaderBytes;
  limits.max_depth = 8;  // {name: {"shape": [..]}} is three levels deep
  // Also refuses a tensor named twice (nlohmann would keep the last one).
  const json doc = parse_json(text, name + ": header", limits);
  if (!doc.is_object())
    throw std::invalid_argument(lf::str(name, ": header must be a JSON object, found ",
                                    doc.type_name()));
  const uint64_t data_bytes = h.file_bytes - 8 - h.header_bytes;
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object())
        throw std::invalid_argument(lf::str(name, ": __metadata__ must be an object of strings"));
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string())
          throw std::invalid_argument(lf::str(name, ": __metadata__ value of '", excerpt(m.key()),
                                          "' must be a string, found ", json_excerpt(m.value())));
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    h.entries.push_back(parse_entry(name, it.key(), it.value(), data_bytes));
  }
  // nlohmann's object is name-ordered, so entries are too; overlaps are found in offset order.
  std::vector<const SafetensorsEntry*> by_offset;
  for (const auto& e : h.entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](auto* a, auto* b) { return a->begin != b->begin ? a->begin < b->begin : a->end < b->end; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->begin < by_offset[i - 1]->end)
      throw std::invalid_argument(lf::str(name, ": tensors '", excerpt(by_offset[i - 1]->name), "' [",
                                      by_offset[i - 1]->begin, ", ", by_offset[i - 1]->end,
                                      ") and '", excerpt(by_offset[i]->name), "' [", by_offset[i]->begin,
                                      ", ", by_offset[i]->end, ") overlap"));
  return h;
}

at::Tensor read_entry(const ByteSource& src, const SafetensorsHeader& h, const SafetensorsEntry& e) {
  const at::ScalarType type = safetensors_dtype_to_scalar(e.dtype, e.name);
  const uint64_t base = 8 + h.header_bytes;
  if (type == at::kBool) {
    at::Tensor raw = at::empty(e.shape, at::TensorOptions().dtype(at::kByte));
    src.read(base + e.begin, raw.data_ptr(), e.nbytes());
    if (raw.numel() > 0 && raw.max().item<uint8_t>() > 1)
      throw std::invalid_argument(lf::str(src.name(), ": tensor '", excerpt(e.name),
                                      "' is BOOL but holds bytes other than 0 and 1"));
    return raw.view(at::kBool);
  }
  at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(type));
  if (e.nbytes() > 0) src.read(base + e.begin, t.data_ptr(), e.nbytes());
  return t;
}

SafetensorsContent load_all(const ByteSource& src) {
  const SafetensorsHeader h = parse_header(src);
  SafetensorsContent out;
  out.metadata = h.metadata;
  for (const auto& e : h.entries) out.tensors.emplace(e.name, read_entry(src, h, e));
  return out;
}

void hash_entry_prefix(Sha256& sha, const std::string& name, const std::string& dtype,
                       at::IntArrayRef shape) {
  auto put_u64 = [&](uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
    sha.update(b, 8);
  };
  put_u64(name.size());
  sha.update(name);
  put_u64(dtype.size());
  sha.update(dtype);
  put_u64(shape.size());
  for (int64_t d : shape) put_u64(static_cast<uint64_t>(d));
}

at::Tensor cpu_contiguous(const at::Tensor& t, const std::string& name) {
  if (!t.defined()) throw std::invalid_argument(lf::str("tensor '", name, "' is undefined"));
  return t.detach().to(at::kCPU).contiguous();
}

}  // namespace

at::ScalarType safetensors_dtype_to_scalar(const std::string& dtype, const std::string& what) {
  for (const auto& row : kDtypes)
    if (dtype == row.name) return row.type;
  throw std::invalid_argument(lf::str(what, ": dtype \"", excerpt(dtype, 16),
                                  "\" is not supported (expected one of F64, F32, F16, BF16, "
                                  "I64, I32, I16, I8, U8, BOOL)"));
}

std::string scalar_to_safetensors_dtype(at::ScalarType type, const std::string& what) {
  for (const auto& row : kDtypes)
    if (type == row.type) return row.name;
  throw std::invalid_argument(lf::str(what, ": dtype ", c10::toString(type),
                                  " cannot be stored in safetensors by LatentForge (supported: "
                                  "float64/32/16, bfloat16, int64/32/16/8, uint8, bool)"));
}

SafetensorsContent load_safetensors(const std::string& path) { return load_all(FileSource(path)); }

SafetensorsContent parse_safetensors(const std::string& bytes, const std::string& source) {
  return load_all(MemorySource(bytes, source));
}

SafetensorsHeader read_safetensors_header(const std::string& path) {
  return parse_header(FileSource(path));
}

SafetensorsHeader parse_safetensors_header(const std::string& bytes, const std::string& source) {
  return parse_header(MemorySource(bytes, source));
}

std::string describe_safetensors(const SafetensorsHeader& h) {
  size_t wname = 4, wtype = 5, wshape = 5;
  std::vector<std::string> shapes;
  for (const auto& e : h.entries) {
    shapes.push_back(shape_string(e.shape));
    wname = std::max(wname, e.name.size());
    wtype = std::max(wtype, e.dtype.size());
    wshape = std::max(wshape, shapes.back().size());
  }
  auto pad = [](const std::string& s, size_t w) { return s + std::string(w - s.size() + 2, ' '); };
  std::string out = pad("name", wname) + pad("dtype", wtype) + pad("shape", wshape) + "bytes\n";
  uint64_t total = 0, params = 0;
  for (size_t i = 0; i < h.entries.size(); ++i) {
    const auto& e = h.entries[i];
    out += pad(e.name, wname) + pad(e.dtype, wtype) + pad(shapes[i], wshape) +
           std::to_string(e.nbytes()) + "\n";
    total += e.nbytes();
    params += e.nbytes() / element_size(e.dtype);
  }
  out += lf::str(h.entries.size(), " tensors, ", params, " elements, ", human_bytes(double(total)),
             " of data, header ", h.header_bytes, " bytes\n");
  for (const auto& [k, v] : h.metadata) out += lf::str("metadata ", k, " = ", v, "\n");
  return out;
}

namespace {

// A file's layout: the 8-byte length and the padded header, then the tensors' bytes in `items`
// order (contiguous CPU tensors, larger elements first, then by name).
struct Layout {
  std::string head;  // length + header
  std::vector<at::Tensor> items;
};

Layout layout_of(const TensorMap& tensors, const TensorMetadata& metadata) {
  require_little_endian();
  struct Item {
    const std::string* name;
    at::Tensor t;
    std::string dtype;
  };
  std::vector<Item> items;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__")
      throw std::invalid_argument(lf::str("safetensors: tensor name \"", name,
                                      "\" is reserved or empty"));
    at::Tensor c = cpu_contiguous(t, name);
    items.push_back({&name, c, scalar_to_safetensors_dtype(c.scalar_type(), "tensor '" + name + "'")});
  }
  // Larger elements first, then by name: every tensor starts aligned to its element size.
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.t.element_size() > b.t.element_size();
  });
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      header += (first ? "" : ",") + json(k).dump() + ":" + json(v).dump();
      first = false;
    }
    header += "}";
  }
  uint64_t offset = 0;
  for (const auto& it : items) {
    const uint64_t n = it.t.numel() * it.t.element_size();
    if (header.size() > 1) header += ",";
    header += json(*it.name).dump() + ":{\"dtype\":\"" + it.dtype + "\",\"shape\":[";
    for (int64_t d = 0; d < it.t.dim(); ++d)
      header += (d ? "," : "") + std::to_string(it.t.size(d));
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + n) + "]}";
    offset += n;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  Layout out;
  for (int i = 0; i < 8; ++i) out.head.push_back(static_cast<char>((uint64_t(header.size()) >> (8 * i)) & 0xff));
  out.head += header;
  for (auto& it : items) out.items.push_back(std::move(it.t));
  return out;
}

}  // namespace

std::string serialize_safetensors(const TensorMap& tensors, const TensorMetadata& metadata) {
  const Layout l = layout_of(tensors, metadata);
  std::string out = l.head;
  for (const auto& t : l.items) out.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  return out;
}

void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const TensorMetadata& metadata) {
  // Streamed from the tensors' memory: no second copy of a checkpoint file in RAM.
  const Layout l = layout_of(tensors, metadata);
  std::vector<std::pair<const void*, size_t>> pieces{{l.head.data(), l.head.size()}};
  for (const auto& t : l.items) pieces.emplace_back(t.data_ptr(), static_cast<size_t>(t.numel() * t.element_size()));
  atomic_write_pieces(path, pieces);
}

std::string hash_tensors(const TensorMap& tensors) {
  Sha256 sha;
  for (const auto& [name, t] : tensors) {
    at::Tensor c = cpu_contiguous(t, name);
    hash_entry_prefix(sha, name, scalar_to_safetensors_dtype(c.scalar_type(), "tensor '" + name + "'"), c.sizes());
    sha.update(c.data_ptr(), c.numel() * c.element_size());
  }
  return sha.hex();
}

std::string hash_safetensors_file(const std::string& path) {
  FileSource src(path);
  const SafetensorsHeader h = parse_header(src);
  Sha256 sha;
  std::vector<char> buf(1 << 20);
  for (const auto& e : h.entries) {  // name order, as hash_tensors
    hash_entry_prefix(sha, e.name, e.dtype, e.shape);
    for (uint64_t done = 0; done < e.nbytes();) {
      const uint64_t n = std::min<uint64_t>(buf.size(), e.nbytes() - done);
      src.read(8 + h.header_bytes + e.begin + done, buf.data(), n);
      sha.update(buf.data(), n);
      done += n;
    }
  }
  return sha.hex();
}

}  // namespace lf::core
