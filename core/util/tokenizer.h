// A byte-level tokenizer that needs no vocabulary file or download (ByT5's idea): a caption's
// UTF-8 bytes are its tokens 0..255, framed by begin and end tokens and padded to the context
// length. Deterministic and the same on every machine, so tokens can live in the latent cache.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

namespace lf {

class ByteTokenizer {
 public:
  static constexpr int32_t kBegin = 256;
  static constexpr int32_t kEnd = 257;
  static constexpr int32_t kPad = 258;
  static constexpr int64_t kVocabSize = 259;
  static constexpr const char* kName = "bytes-v1";  // recorded in the cache's manifest

  // context_length >= 3 (begin, at least one byte, end). Throws std::invalid_argument otherwise.
  explicit ByteTokenizer(int64_t context_length);
  int64_t context_length() const { return context_length_; }

  struct Encoded {
    std::vector<int32_t> tokens;  // context_length() of them: begin, bytes, end, pad...
    bool truncated = false;       // the caption had more bytes than fit
  };
  // A caption longer than context_length() - 2 bytes is cut at the last whole UTF-8 character
  // that fits (never inside a multi-byte character), and the end token still closes it.
  Encoded encode(const std::string& text) const;
  // Tokens [N, context_length] int32 and their mask [N, context_length] bool (false on padding),
  // and how many captions were truncated.
  struct Batch {
    at::Tensor tokens, mask;
    int64_t truncated = 0;
  };
  Batch encode(const std::vector<std::string>& texts) const;
  // The caption back from tokens (begin/end/pad dropped).
  static std::string decode(const std::vector<int32_t>& tokens);

 private:
  int64_t context_length_;
};

}  // namespace lf
