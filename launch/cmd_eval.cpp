// `latentforge eval` and `eval train-classifier`: what was learned, measured.
// The classifier (a fixed recipe trained by LatentForge itself on the labelled training split)
// gives 128-wide features for a Fréchet distance between generated images and the test split
// (the FID recipe with a feature network that fits the data) and predictions for the class
// accuracy of class-conditional samples. The floor is the FD of as many real training images
// against the test split: FD's bias depends on N, so compare only at equal N.
#include <glog/logging.h>

#include <chrono>
#include <filesystem>
#include <iostream>

#include "core/adamw.h"
#include "core/classifier.h"
#include "core/image_metrics.h"
#include "core/safetensors.h"
#include "core/state_dict.h"
#include "core/util/fs.h"
#include "core/util/progress.h"
#include "core/util/strings.h"
#include "data/sample_stream.h"
#include "data/samples_file.h"
#include "launch/autoencoder.h"
#include "launch/data_source.h"
#include "launch/lr_schedule.h"
#include "launch/model_io.h"
#include "launch/subcommands.h"
#include "launch/vae_evaluation.h"

namespace fs = std::filesystem;

namespace lf::launch {

namespace {

// The fixed recipe: a 16-32-64 channel CNN, AdamW 2e-3 with cosine decay, batch 128, flips
// on odd epochs; about 91% on Fashion-MNIST's test split after 3 epochs.
constexpr int64_t kClassifierBatch = 128;
constexpr int64_t kClassifierWidth = 16;
constexpr double kClassifierLr = 2e-3;

at::Tensor all_images(const data::Source& s) { return s.get(0, s.size()).images; }

core::Classifier load_classifier(const std::string& path) {
  if (!fs::exists(path))
    throw std::invalid_argument(str("eval.classifier = '", path, "': not found; train it once with "
                                    "`latentforge eval train-classifier` (same data.source)"));
  auto content = core::load_safetensors(path);
  core::ClassifierOptions o;
  try {
    o.in_channels = std::stoll(content.metadata.at("in_channels"));
    o.num_classes = std::stoll(content.metadata.at("num_classes"));
    o.width = std::stoll(content.metadata.at("width"));
    o.feature_dim = std::stoll(content.metadata.at("feature_dim"));
  } catch (const std::exception&) {
    throw std::invalid_argument(str(path, ": not a LatentForge classifier (metadata in_channels, num_classes, width, "
                                    "feature_dim missing)"));
  }
  core::Classifier c(o);
  load_module_weights_from_map(*c, content.tensors, path);
  c->eval();
  return c;
}

// Features [N, D] and logits [N, K] in batches, without autograd.
std::pair<at::Tensor, at::Tensor> run_classifier(core::Classifier& c, const at::Tensor& images, int64_t batch) {
  at::NoGradGuard g;
  std::vector<at::Tensor> fs_, ls;
  for (int64_t i = 0; i < images.size(0); i += batch) {
    at::Tensor x = images.narrow(0, i, std::min(batch, images.size(0) - i)).to(at::kFloat);
    at::Tensor f = c->features(x);
    fs_.push_back(f);
    ls.push_back(c->head->forward(f));
  }
  return {at::cat(fs_), at::cat(ls)};
}

double accuracy(const at::Tensor& logits, const at::Tensor& labels) {
  return logits.argmax(1).eq(labels).to(at::kDouble).mean().item<double>();
}

}  // namespace

int run_train_classifier(const Invocation& inv) {
  const DataConfig& data_cfg = inv.config.data();
  const EvalConfig& ec = inv.config.eval();
  auto train = open_configured_source(data_cfg, "train");
  auto test = open_configured_source(data_cfg, "test");
  if (train->num_classes() == 0)
    throw UsageError(str(data_cfg.source, " has no labels: the evaluation classifier needs a labelled dataset"));
  core::ClassifierOptions o;
  o.in_channels = train->channels();
  o.num_classes = train->num_classes();
  o.width = kClassifierWidth;
  at::manual_seed(0);
  core::Classifier model(o);
  auto named = std::vector<std::pair<std::string, at::Tensor>>();
  for (const auto& p : model->named_parameters(true)) named.emplace_back(p.key(), p.value());
  std::vector<at::Tensor> params;
  for (auto& [n, p] : named) params.push_back(p);
  core::AdamW opt(named, {kClassifierLr, 0.9, 0.999, 1e-8, 1e-4});
  auto batch = train->get(0, train->size());
  at::Tensor x_all = batch.images, y_all = batch.labels;
  const int64_t n = train->size();
  const int64_t steps = ec.classifier_epochs * n / kClassifierBatch;
  data::SampleStream stream(n, /*seed=*/0);
  std::vector<int64_t> idx(kClassifierBatch), ep(kClassifierBatch);
  Progress progress("train-classifier", steps, "steps");
  model->train();
  for (int64_t s = 0; s < steps; ++s) {
    stream.lookup(s * kClassifierBatch, (s + 1) * kClassifierBatch, idx.data(), ep.data());
    at::Tensor ix = at::tensor(idx, at::kLong);
    at::Tensor x = x_all.index_select(0, ix);
    // Horizontal flips on every other epoch: a fixed, deterministic augmentation.
    if (ep[0] % 2 == 1) x = x.flip({3});
    at::Tensor loss = at::cross_entropy_loss(model->forward(x), y_all.index_select(0, ix));
    loss.backward();
    opt.step(learning_rate(kClassifierLr, LRSchedule::kCosine, steps / 20, 0.01, s + 1, steps));
    for (auto& p : params) p.mutable_grad().zero_();
    progress.update(s + 1);
  }
  progress.finish();
  model->eval();
  auto [feat, logits] = run_classifier(model, all_images(*test), ec.batch_size);
  double acc = accuracy(logits, test->get(0, test->size()).labels);
  fs::create_directories(fs::path(ec.classifier).parent_path().empty() ? "." : fs::path(ec.classifier).parent_path());
  std::map<std::string, std::string> meta = {
      {"latentforge.kind", "classifier"}, {"in_channels", std::to_string(o.in_channels)},
      {"num_classes", std::to_string(o.num_classes)}, {"width", std::to_string(o.width)},
      {"feature_dim", std::to_string(o.feature_dim)}, {"test_accuracy", str(acc)},
      {"data", train->description().dump()}};
  save_module_weights(*model, ec.classifier, meta);
  LOG(INFO) << "classifier: test accuracy " << acc * 100 << "% on " << test->size() << " images; written to "
            << ec.classifier;
  std::cout << "classifier: " << ec.classifier << "  test accuracy " << acc * 100 << "%" << std::endl;
  if (acc < 0.9) LOG(WARNING) << "the classifier's test accuracy is below 90%: FD and class accuracy are less reliable";
  return 0;
}

int run_eval(const Invocation& inv) {
  const DataConfig& data_cfg = inv.config.data();
  const EvalConfig& ec = inv.config.eval();
  const std::string vae_kind = inv.config.value("vae.kind"), vae_weights = inv.config.value("vae.weights");
  nlohmann::json metrics = nlohmann::json::object();
  auto test = open_configured_source(data_cfg, "test");
  at::Tensor test_images = all_images(*test);

  // The VAE's reconstructions of the test split.
  if (ec.vae && vae_kind == "kl" && !vae_weights.empty()) {
    Autoencoder ae = Autoencoder::load("kl", vae_weights, test->channels());
    core::VAE vae = ae.vae();
    int64_t n = std::min(ec.vae_images, test->size());
    auto q = reconstruction_quality(vae, test_images.narrow(0, 0, n), ec.batch_size);
    metrics["vae"] = {{"weights", vae_weights}, {"psnr", q.psnr}, {"ssim", q.ssim}, {"images", q.count}};
    LOG(INFO) << "VAE " << vae_weights << ": test PSNR " << q.psnr << " dB, SSIM " << q.ssim << " (" << q.count
              << " images)";
  }

  std::string samples = ec.samples;
  if (samples.empty()) {
    // Where `sample` with the same config wrote them: sample.out_dir, else the samples/ folder of
    // the run sample.checkpoint names (or of train.run_dir).
    std::string dir = inv.config.value("sample.out_dir");
    if (dir.empty()) {
      const std::string checkpoint = inv.config.value("sample.checkpoint");
      fs::path run = checkpoint.empty() ? fs::path(inv.config.value("train.run_dir")) : fs::path(checkpoint);
      if (fs::exists(run / "state.json")) run = run.parent_path().parent_path();  // a checkpoint dir
      dir = (run / "samples").string();
    }
    samples = (fs::path(dir) / "samples.h5").string();
  }
  if (fs::exists(samples)) {
    core::Classifier clf = load_classifier(ec.classifier);
    auto s = data::read_samples_file(samples);
    const int64_t n = s.images.size(0);
    if (n < 2) throw std::invalid_argument(str(samples, ": ", n, " images; FD needs at least 2"));
    at::Tensor gen = s.images.to(at::kFloat) / 127.5 - 1.0;
    if (gen.sizes().slice(1) != test_images.sizes().slice(1))
      throw std::invalid_argument(lf::str(samples, ": images are ", gen.sizes().slice(1), " but the test split's are ",
                                      test_images.sizes().slice(1)));
    auto [test_f, test_l] = run_classifier(clf, test_images, ec.batch_size);
    auto [gen_f, gen_l] = run_classifier(clf, gen, ec.batch_size);
    auto [mu_t, s_t] = core::feature_statistics(test_f);
    auto [mu_g, s_g] = core::feature_statistics(gen_f);
    double fd = core::frechet_distance(mu_g, s_g, mu_t, s_t);
    // The floor: as many real training images (evenly spread over the split) against the test split.
    auto train = open_configured_source(data_cfg, "train");
    int64_t m = std::min(n, train->size());
    at::Tensor pick = (at::arange(m, at::kLong) * train->size()).div(m, "floor");
    at::Tensor real = all_images(*train).index_select(0, pick);
    auto [real_f, real_l] = run_classifier(clf, real, ec.batch_size);
    auto [mu_r, s_r] = core::feature_statistics(real_f);
    double floor = core::frechet_distance(mu_r, s_r, mu_t, s_t);
    metrics["samples"] = samples;
    metrics["num_samples"] = n;
    metrics["fd"] = fd;
    metrics["fd_floor"] = floor;
    metrics["fd_floor_num_real"] = m;
    metrics["fd_ratio"] = fd / floor;
    metrics["classifier"] = ec.classifier;
    metrics["classifier_test_accuracy"] = accuracy(test_l, test->get(0, test->size()).labels);
    metrics["real_class_accuracy"] = accuracy(real_l, train->get(0, train->size()).labels.index_select(0, pick));
    bool labelled = s.labels.defined() && s.labels.numel() == n && s.labels.min().item<int64_t>() >= 0;
    if (labelled) metrics["class_accuracy"] = accuracy(gen_l, s.labels);
    LOG(INFO) << "eval " << samples << ": FD " << fd << " (floor " << floor << " at N = " << m << ", ratio "
              << fd / floor << ")"
              << (labelled ? str(", class accuracy ", metrics["class_accuracy"].get<double>() * 100, "%") : "");
  } else if (!metrics.contains("vae")) {
    throw std::invalid_argument(str("eval: nothing to evaluate: no samples at ", samples,
                                    " (run `latentforge sample` or set eval.samples) and no VAE (vae.weights)"));
  } else {
    LOG(INFO) << "eval: no samples at " << samples << "; VAE metrics only";
  }
  std::string out = ec.out;
  if (out.empty())
    out = fs::exists(samples) ? (fs::path(samples).parent_path() / "metrics.json").string() : "metrics.json";
  atomic_write_file(out, metrics.dump(2) + "\n");
  std::cout << "metrics: " << out << "\n" << metrics.dump(2) << std::endl;
  return 0;
}

}  // namespace lf::launch
