// The byte-level tokenizer (see tokenizer.h).
#include "core/util/tokenizer.h"

#include <stdexcept>

#include "core/util/strings.h"

namespace lf {

ByteTokenizer::ByteTokenizer(int64_t context_length) : context_length_(context_length) {
  if (context_length < 3)
    throw std::invalid_argument(lf::str("tokenizer context length ", context_length,
                                        ": at least 3 (begin, one byte, end)"));
}

ByteTokenizer::Encoded ByteTokenizer::encode(const std::string& text) const {
  const std::string kept = lf::utf8_prefix(text, static_cast<size_t>(context_length_ - 2));
  Encoded out;
  out.truncated = kept.size() < text.size();
  out.tokens.reserve(static_cast<size_t>(context_length_));
  out.tokens.push_back(kBegin);
  for (char c : kept) out.tokens.push_back(static_cast<unsigned char>(c));
  out.tokens.push_back(kEnd);
  out.tokens.resize(static_cast<size_t>(context_length_), kPad);
  return out;
}

ByteTokenizer::Batch ByteTokenizer::encode(const std::vector<std::string>& texts) const {
  const int64_t n = static_cast<int64_t>(texts.size());
  Batch b;
  b.tokens = at::empty({n, context_length_}, at::kInt);
  int32_t* dst = b.tokens.data_ptr<int32_t>();
  for (int64_t i = 0; i < n; ++i) {
    Encoded e = encode(texts[static_cast<size_t>(i)]);
    b.truncated += e.truncated ? 1 : 0;
    std::copy(e.tokens.begin(), e.tokens.end(), dst + i * context_length_);
  }
  b.mask = b.tokens.ne(kPad);
  return b;
}

std::string ByteTokenizer::decode(const std::vector<int32_t>& tokens) {
  std::string s;
  for (int32_t t : tokens)
    if (t >= 0 && t < 256) s.push_back(static_cast<char>(t));
  return s;
}

}  // namespace lf
