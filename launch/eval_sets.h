// What `eval` computes over an image set, split across ranks: the feature network's
// statistics (for Fréchet distances and class accuracies) and the autoencoder's reconstruction
// quality. Batch j of a set holds images [j*B, (j+1)*B); rank r of W takes the contiguous batches
// [r*J/W, (r+1)*J/W) of the J batches, so every image is computed in the same batch whatever W
// (its features are the same bits). Each rank sums what it saw in float64 (counts, sums, sums of
// outer products) and the sums are all-reduced: the statistics equal one process's up to the
// order of float64 additions (docs/cli.md states the tolerance the tests check).
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <utility>

#include "core/classifier.h"
#include "distributed/communicator.h"
#include "launch/autoencoder.h"
#include "launch/stage_device.h"

namespace lf {
class Progress;
}

namespace lf::launch {

// Batches [first, last) of `num_batches` for rank `rank` of `world`.
std::pair<int64_t, int64_t> batches_for_rank(int64_t num_batches, int rank, int world);

// A set of images by index: load(begin, end) returns images [end-begin, C, H, W] (uint8 0..255,
// or float in [-1, 1]) and their labels (int64; -1 = none), on the host.
struct ImageSet {
  int64_t size = 0;
  std::function<std::pair<at::Tensor, at::Tensor>(int64_t begin, int64_t end)> load;
};

// The feature network's sufficient statistics over a set, in float64.
struct FeatureMoments {
  int64_t count = 0;
  at::Tensor sum;    // [D]
  at::Tensor outer;  // [D, D]: sum of f f^T
  int64_t correct = 0, unlabelled = 0;  // predictions equal to the label; labels < 0
  at::Tensor class_count, class_correct;  // float64 [K] per true class (K = the logits' width)

  void add(const at::Tensor& features, const at::Tensor& logits, const at::Tensor& labels);
  // Sums every rank's moments (collective; CPU communicator).
  void all_reduce(dist::Communicator& comm, const std::string& what);
  // Mean [D] and unbiased covariance [D, D] (as numpy.cov): (outer - n mu mu^T) / (n - 1).
  std::pair<at::Tensor, at::Tensor> statistics() const;
  // Fraction of correct predictions; only meaningful when unlabelled == 0.
  double accuracy() const { return count ? static_cast<double>(correct) / static_cast<double>(count) : 0.0; }
  // The mean over the classes present of each class's accuracy (so a rare class weighs as much
  // as a common one); 0 when no labelled image was added.
  double macro_accuracy() const;
  // The share of the most frequent true class (what always predicting it would score).
  double majority_share() const;
};

// This rank's share of `set` through the classifier (features and logits under the stage's
// precision), batches of `batch`; `progress` (may be null) counts images. Not collective.
FeatureMoments classify_set(core::Classifier& classifier, const StageDevice& dev, const ImageSet& set, int64_t batch,
                            int rank, int world, Progress* progress);

// Reconstruction quality sums: PSNR (capped at 100 dB, as core::mean_psnr) and SSIM per image.
struct ReconstructionSums {
  int64_t count = 0;
  double psnr = 0, ssim = 0;
  void all_reduce(dist::Communicator& comm, const std::string& what);
};

// This rank's share of `set` encoded (posterior mode) and decoded by `ae`. Not collective.
ReconstructionSums reconstruct_set(const Autoencoder& ae, const StageDevice& dev, const ImageSet& set, int64_t batch,
                                   int rank, int world, Progress* progress);

// A classifier in LatentForge's safetensors layout (what `eval train-classifier` writes, or a
// user's own of the same architecture): core::Classifier's tensor names; the options come from
// the metadata (in_channels, num_classes, width, feature_dim) or, without metadata, from the
// tensors' shapes. Throws std::invalid_argument naming the path and what is wrong.
core::Classifier load_classifier(const std::string& path);

}  // namespace lf::launch
