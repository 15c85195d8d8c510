// Evaluation of image sets across ranks (see eval_sets.h).
#include "launch/eval_sets.h"

#include <cmath>
#include <filesystem>
#include <map>

#include "core/image_metrics.h"
#include "core/safetensors.h"
#include "core/util/progress.h"
#include "core/util/strings.h"
#include "launch/model_io.h"

namespace lf::launch {

namespace {

// The batch loop shared by both kinds of set: this rank's batches through `compute`, results
// (and the labels load returned) handed to `consume` in order.
void run_batches(const StageDevice& dev, const ImageSet& set, int64_t batch, int rank, int world,
                 const std::function<std::vector<at::Tensor>(const at::Tensor&)>& compute,
                 const std::function<void(std::vector<at::Tensor>&, const at::Tensor& labels)>& consume,
                 Progress* progress) {
  const int64_t num_batches = (set.size + batch - 1) / batch;
  // Not structured bindings: the lambdas below capture `first`, which C++17 (clang) forbids.
  const auto range = batches_for_rank(num_batches, rank, world);
  const int64_t first = range.first, last = range.second;
  std::map<int64_t, at::Tensor> labels;  // of batches loaded but not yet consumed
  dev.pipeline(
      last - first,
      [&](int64_t j) {
        const int64_t b = (first + j) * batch;
        auto [images, l] = set.load(b, std::min(b + batch, set.size));
        labels[j] = l;
        return images;
      },
      [&](const at::Tensor& images) {
        at::NoGradGuard no_grad;
        // uint8 travels as bytes and becomes [-1, 1] on the device (as samples.h5 is read).
        at::Tensor x = images.scalar_type() == at::kByte ? images.to(dev.dtype()) / 127.5 - 1.0 : images;
        return compute(x);
      },
      [&](int64_t j, std::vector<at::Tensor>& out) {
        consume(out, labels.at(j));
        if (progress) progress->add(labels.at(j).size(0));
        labels.erase(j);
      });
}

int64_t parse_meta(const std::map<std::string, std::string>& meta, const std::string& key, const std::string& path) {
  const std::string& v = meta.at(key);
  char* end = nullptr;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0')
    throw std::invalid_argument(str(path, ": metadata ", key, " = '", v, "' is not an integer"));
  return x;
}

}  // namespace

std::pair<int64_t, int64_t> batches_for_rank(int64_t num_batches, int rank, int world) {
  if (world < 1 || rank < 0 || rank >= world)
    throw std::invalid_argument(str("rank ", rank, " of world ", world, ": expected 0 <= rank < world"));
  return {num_batches * rank / world, num_batches * (rank + 1) / world};
}

void FeatureMoments::add(const at::Tensor& features, const at::Tensor& logits, const at::Tensor& labels) {
  at::Tensor f = features.to(at::kCPU, at::kDouble);
  if (!sum.defined()) {
    sum = at::zeros({f.size(1)}, at::kDouble);
    outer = at::zeros({f.size(1), f.size(1)}, at::kDouble);
  }
  sum.add_(f.sum(0));
  outer.add_(f.t().mm(f));
  count += f.size(0);
  at::Tensor l = labels.to(at::kCPU, at::kLong);
  at::Tensor known = l >= 0;
  unlabelled += (~known).sum().item<int64_t>();
  at::Tensor hit = logits.to(at::kCPU).argmax(1).eq(l) & known;
  correct += hit.sum().item<int64_t>();
  const int64_t k = logits.size(1);
  if (!class_count.defined()) {
    class_count = at::zeros({k}, at::kDouble);
    class_correct = at::zeros({k}, at::kDouble);
  }
  at::Tensor lk = l.masked_select(known & (l < k));
  class_count.index_add_(0, lk, at::ones({lk.size(0)}, at::kDouble));
  at::Tensor hits = l.masked_select(hit & (l < k));
  class_correct.index_add_(0, hits, at::ones({hits.size(0)}, at::kDouble));
}

double FeatureMoments::macro_accuracy() const {
  if (!class_count.defined()) return 0.0;
  at::Tensor present = class_count > 0;
  if (present.sum().item<int64_t>() == 0) return 0.0;
  return (class_correct.masked_select(present) / class_count.masked_select(present)).mean().item<double>();
}

double FeatureMoments::majority_share() const {
  if (!class_count.defined() || class_count.sum().item<double>() == 0) return 0.0;
  return (class_count.max() / class_count.sum()).item<double>();
}

void FeatureMoments::all_reduce(dist::Communicator& comm, const std::string& what) {
  if (comm.world_size() == 1) return;
  const int64_t d = sum.size(0);
  // Counts travel as float64: exact below 2^53.
  // Every rank has the per-class tallies (a rank without images has zeros of the classifier's width).
  const int64_t k = class_count.defined() ? class_count.size(0) : 0;
  at::Tensor packed = at::cat({at::tensor({double(count), double(correct), double(unlabelled)}, at::kDouble),
                               sum, outer.flatten()});
  if (k > 0) packed = at::cat({packed, class_count, class_correct});
  comm.all_reduce(packed, dist::ReduceOp::kSum, what);
  if (k > 0) {
    class_count = packed.narrow(0, 3 + d + d * d, k).clone();
    class_correct = packed.narrow(0, 3 + d + d * d + k, k).clone();
  }
  count = static_cast<int64_t>(packed[0].item<double>());
  correct = static_cast<int64_t>(packed[1].item<double>());
  unlabelled = static_cast<int64_t>(packed[2].item<double>());
  sum = packed.narrow(0, 3, d).clone();
  outer = packed.narrow(0, 3 + d, d * d).view({d, d}).clone();
}

std::pair<at::Tensor, at::Tensor> FeatureMoments::statistics() const {
  TORCH_CHECK(count >= 2, "feature statistics need at least 2 images, got ", count);
  const double n = static_cast<double>(count);
  at::Tensor mu = sum / n;
  at::Tensor cov = (outer - n * at::outer(mu, mu)) / (n - 1);
  return {mu, cov};
}

FeatureMoments classify_set(core::Classifier& classifier, const StageDevice& dev, const ImageSet& set, int64_t batch,
                            int rank, int world, Progress* progress) {
  const int64_t d = classifier->options().feature_dim;
  FeatureMoments m;
  m.sum = at::zeros({d}, at::kDouble);
  m.outer = at::zeros({d, d}, at::kDouble);
  m.class_count = at::zeros({classifier->options().num_classes}, at::kDouble);
  m.class_correct = at::zeros({classifier->options().num_classes}, at::kDouble);
  run_batches(
      dev, set, batch, rank, world,
      [&](const at::Tensor& x) {
        auto autocast = dev.autocast();
        at::Tensor f = classifier->features(x);
        at::Tensor logits = classifier->head->forward(f);
        return std::vector<at::Tensor>{f.to(dev.dtype()), logits.to(dev.dtype())};
      },
      [&](std::vector<at::Tensor>& out, const at::Tensor& labels) { m.add(out[0], out[1], labels); }, progress);
  return m;
}

void ReconstructionSums::all_reduce(dist::Communicator& comm, const std::string& what) {
  if (comm.world_size() == 1) return;
  at::Tensor packed = at::tensor({double(count), psnr, ssim}, at::kDouble);
  comm.all_reduce(packed, dist::ReduceOp::kSum, what);
  count = static_cast<int64_t>(packed[0].item<double>());
  psnr = packed[1].item<double>();
  ssim = packed[2].item<double>();
}

ReconstructionSums reconstruct_set(const Autoencoder& ae, const StageDevice& dev, const ImageSet& set, int64_t batch,
                                   int rank, int world, Progress* progress) {
  ReconstructionSums r;
  run_batches(
      dev, set, batch, rank, world,
      [&](const at::Tensor& x) {
        at::Tensor rec;
        {
          auto autocast = dev.autocast();
          rec = ae.decode(ae.encode_moments(x, x.size(0)).first, x.size(0));
        }
        // Compared in [0, 1] and float64, as vae_evaluation.cpp does.
        at::Tensor a = (x.to(at::kDouble) + 1) / 2, b = (rec.to(at::kDouble) + 1) / 2;
        at::Tensor ssim = a.size(2) >= 11 ? core::ssim(a, b) : at::full({a.size(0)}, NAN, a.options());
        return std::vector<at::Tensor>{core::psnr(a, b).clamp_max(100.0), ssim};
      },
      [&](std::vector<at::Tensor>& out, const at::Tensor&) {
        r.count += out[0].size(0);
        r.psnr += out[0].sum().item<double>();
        r.ssim += out[1].sum().item<double>();
      },
      progress);
  return r;
}

core::Classifier load_classifier(const std::string& path) {
  if (!std::filesystem::exists(path))
    throw std::invalid_argument(str("eval.classifier = '", path, "': not found; train it once with "
                                    "`latentforge eval train-classifier` (same data.source), or give a "
                                    "classifier of the same layout (docs/cli.md, eval)"));
  auto content = core::load_safetensors(path);
  // From the metadata when present, else from the tensors' shapes (a user's own export).
  auto option = [&](const std::string& key, const std::string& tensor, int64_t dim) -> int64_t {
    if (content.metadata.count(key)) return parse_meta(content.metadata, key, path);
    auto it = content.tensors.find(tensor);
    if (it == content.tensors.end() || it->second.dim() <= dim)
      throw std::invalid_argument(str(path, ": not a classifier in LatentForge's layout: no metadata ", key,
                                      " and no tensor ", tensor, " (core/classifier.h names the tensors)"));
    return it->second.size(dim);
  };
  core::ClassifierOptions o;
  o.in_channels = option("in_channels", "convs.0.weight", 1);
  o.width = option("width", "convs.0.weight", 0);
  o.feature_dim = option("feature_dim", "feature.weight", 0);
  o.num_classes = option("num_classes", "head.weight", 0);
  try {
    o.validate();
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(str(path, ": ", e.what()));
  }
  core::Classifier c(o);
  load_module_weights_from_map(*c, content.tensors, path);
  c->eval();
  return c;
}

}  // namespace lf::launch
