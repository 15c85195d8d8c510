// `latentforge eval` and `eval train-classifier`: what was learned, measured.
// The classifier (a fixed recipe trained by LatentForge itself on the labelled training split,
// or a user's own in the same layout) gives features for a Fréchet distance between generated
// images and the test split (the FID recipe with a feature network that fits the data) and
// predictions for the class accuracy of class-conditional samples. The floor is the FD of as
// many real training images against the test split: FD's bias depends on N, so compare only at
// equal N. `eval` runs on eval.device and on any number of ranks (launch/eval_sets.h).
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
#include "core/util/json.h"
#include "core/util/progress.h"
#include "core/util/strings.h"
#include "data/sample_stream.h"
#include "data/samples_file.h"
#include "launch/autoencoder.h"
#include "launch/data_source.h"
#include "launch/eval_sets.h"
#include "launch/lr_schedule.h"
#include "launch/model_io.h"
#include "launch/runtime.h"
#include "launch/subcommands.h"

namespace fs = std::filesystem;

namespace lf::launch {

namespace {

// The fixed recipe: a 16-32-64 channel CNN, AdamW 2e-3 with cosine decay, batch 128, flips
// on odd epochs; about 91% on Fashion-MNIST's test split after 3 epochs.
constexpr int64_t kClassifierBatch = 128;
constexpr int64_t kClassifierWidth = 16;
constexpr double kClassifierLr = 2e-3;

at::Tensor all_images(const data::Source& s) { return s.get(0, s.size()).images; }

// Features [N, D] and logits [N, K] in batches, without autograd (the classifier's own test).
std::pair<at::Tensor, at::Tensor> run_classifier(core::Classifier& c, const at::Tensor& images, int64_t batch) {
  at::NoGradGuard g;
  std::vector<at::Tensor> fs_, ls;
  for (int64_t i = 0; i < images.size(0); i += batch) {
    at::Tensor f = c->features(images.narrow(0, i, std::min(batch, images.size(0) - i)).to(at::kFloat));
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
  // The three [eval] keys of the recipe (declared one by one: the device keys are eval's).
  struct {
    std::string classifier;
    int64_t batch_size, classifier_epochs;
  } ec{inv.config.value("eval.classifier"), std::stoll(inv.config.value("eval.batch_size")),
       std::stoll(inv.config.value("eval.classifier_epochs"))};
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
  // Class-balanced cross-entropy (weight n / (K count_k)): on an unbalanced set (the emoji's
  // People & Body is 60% of it) the rare classes still count; all ones on a balanced one.
  at::Tensor counts = at::bincount(y_all, {}, o.num_classes).to(at::kFloat);
  at::Tensor class_weight = at::where(counts > 0, static_cast<double>(n) / (o.num_classes * counts), at::zeros_like(counts));
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
    at::Tensor loss = at::cross_entropy_loss(model->forward(x), y_all.index_select(0, ix), class_weight);
    loss.backward();
    opt.step(learning_rate(kClassifierLr, LRSchedule::kCosine, steps / 20, 0.01, s + 1, steps));
    for (auto& p : params) p.mutable_grad().zero_();
    progress.update(s + 1);
  }
  progress.finish();
  model->eval();
  auto [feat, logits] = run_classifier(model, all_images(*test), ec.batch_size);
  const at::Tensor test_labels = test->get(0, test->size()).labels;
  double acc = accuracy(logits, test_labels);
  FeatureMoments tally;
  tally.add(feat, logits, test_labels);
  fs::create_directories(fs::path(ec.classifier).parent_path().empty() ? "." : fs::path(ec.classifier).parent_path());
  std::map<std::string, std::string> meta = {
      {"latentforge.kind", "classifier"}, {"in_channels", std::to_string(o.in_channels)},
      {"num_classes", std::to_string(o.num_classes)}, {"width", std::to_string(o.width)},
      {"feature_dim", std::to_string(o.feature_dim)}, {"test_accuracy", str(acc)},
      {"test_macro_accuracy", str(tally.macro_accuracy())},
      {"data", train->description().dump()}};
  save_module_weights(*model, ec.classifier, meta);
  LOG(INFO) << "classifier: test accuracy " << acc * 100 << "% (macro over classes " << tally.macro_accuracy() * 100
            << "%) on " << test->size() << " images; written to " << ec.classifier;
  std::cout << "classifier: " << ec.classifier << "  test accuracy " << acc * 100 << "%, macro "
            << tally.macro_accuracy() * 100 << "%" << std::endl;
  if (acc < 0.9) LOG(WARNING) << "the classifier's test accuracy is below 90%: FD and class accuracy are less reliable";
  return 0;
}

namespace {

// Where `sample` with the same config wrote samples.h5: sample.out_dir, else the samples/
// folder of the run sample.checkpoint names (or of train.run_dir).
std::string default_samples_path(const ConfigView& config) {
  std::string dir = config.value("sample.out_dir");
  if (dir.empty()) {
    const std::string checkpoint = config.value("sample.checkpoint");
    fs::path run = checkpoint.empty() ? fs::path(config.value("train.run_dir")) : fs::path(checkpoint);
    if (fs::exists(run / "state.json")) run = run.parent_path().parent_path();  // a checkpoint dir
    dir = (run / "samples").string();
  }
  return (fs::path(dir) / "samples.h5").string();
}

ImageSet source_set(const data::Source& s, int64_t n) {
  return {n, [&s](int64_t b, int64_t e) {
            auto batch = s.get(b, e);
            return std::make_pair(batch.images, batch.labels);
          }};
}

// The category of each prompt of a text model's samples.h5: the label of that caption in the
// test split (-1 when it is not one of its captions, or the split has no captions or labels).
struct PromptCategories {
  at::Tensor label;  // int64 [K]; undefined for samples of a model without prompts
  int64_t count = 0;
  at::Tensor of(const at::Tensor& prompt_index) const {
    at::Tensor i = prompt_index.to(at::kLong);
    at::Tensor inside = (i >= 0) & (i < count);
    return at::where(inside, label.index_select(0, i.clamp(0, std::max<int64_t>(count - 1, 0))), at::full_like(i, -1));
  }
};

PromptCategories prompt_categories(const std::string& samples, const data::Source& test, bool with_classes) {
  PromptCategories out;
  const std::string attr = data::read_samples_attribute(samples, "prompts");
  if (attr.empty()) return out;
  const nlohmann::json list = parse_json(attr, samples + " attribute prompts");
  if (!list.is_array() || list.size() > (size_t{1} << 24))
    throw std::invalid_argument(str(samples, ": attribute prompts is not a list of strings"));
  std::vector<std::string> prompts;
  for (const auto& p : list) {
    if (!p.is_string()) throw std::invalid_argument(str(samples, ": attribute prompts holds a non-string"));
    prompts.push_back(p.get<std::string>());
  }
  out.count = static_cast<int64_t>(prompts.size());
  out.label = at::full({out.count}, -1, at::kLong);
  if (!with_classes || !test.captioned()) {
    LOG(WARNING) << samples << " holds samples of " << out.count << " prompt(s), but the test split "
                 << (test.captioned() ? "has no labels the classifier predicts" : "has no captions")
                 << ": no category accuracy";
    return out;
  }
  std::map<std::string, int64_t> caption_label;  // the first label a caption has in the test split
  for (int64_t b = 0; b < test.size(); b += 512) {
    data::SourceBatch batch = test.get(b, std::min(test.size(), b + 512));
    for (size_t i = 0; i < batch.captions.size(); ++i)
      caption_label.emplace(batch.captions[i], batch.labels[static_cast<int64_t>(i)].item<int64_t>());
  }
  int64_t matched = 0;
  for (int64_t k = 0; k < out.count; ++k) {
    auto it = caption_label.find(prompts[static_cast<size_t>(k)]);
    if (it != caption_label.end()) {
      out.label[k] = it->second;
      ++matched;
    }
  }
  if (matched < out.count)
    LOG(WARNING) << out.count - matched << " of " << out.count << " prompts of " << samples
                 << " are not captions of the test split: their samples count toward FD only";
  return out;
}

// A progress meter on rank 0 for one set ("eval test features (rank 0 of 2)").
std::unique_ptr<Progress> set_progress(const Runtime& rt, const std::string& what, int64_t n, int64_t batch) {
  if (!rt.is_root()) return nullptr;
  const auto [first, last] = batches_for_rank((n + batch - 1) / batch, 0, rt.world());
  const int64_t share = std::min(last * batch, n) - std::min(first * batch, n);
  return std::make_unique<Progress>(rt.world() > 1 ? str("eval ", what, " (rank 0 of ", rt.world(), ")") : "eval " + what,
                                    share, "images");
}

}  // namespace

int run_eval(const Invocation& inv) {
  const DataConfig& data_cfg = inv.config.data();
  const EvalConfig& ec = inv.config.eval();
  Runtime rt(ec.device, inv.config.dist(), "eval.device", /*device_collectives=*/false);
  StageDevice dev = stage_device(rt.device(), ec.precision, "eval.precision");
  dist::Communicator& comm = rt.comm();
  const int rank = rt.rank(), world = rt.world();
  const std::string vae_kind = inv.config.value("vae.kind"), vae_weights = inv.config.value("vae.weights");
  nlohmann::json metrics = nlohmann::json::object();
  auto test = open_configured_source(data_cfg, "test");
  if (rt.is_root()) LOG(INFO) << "eval on " << world << " rank(s), " << dev.describe();

  // The VAE's reconstructions of the test split.
  if (ec.vae && vae_kind == "kl" && !vae_weights.empty()) {
    Autoencoder ae = Autoencoder::load("kl", vae_weights, test->channels());
    ae.to(dev.device(), dev.dtype());
    const int64_t n = std::min(ec.vae_images, test->size());
    auto progress = set_progress(rt, "VAE reconstructions", n, ec.batch_size);
    ReconstructionSums q = reconstruct_set(ae, dev, source_set(*test, n), ec.batch_size, rank, world, progress.get());
    if (progress) progress->finish();
    q.all_reduce(comm, "all_reduce of the VAE's PSNR/SSIM sums");
    const double psnr = q.psnr / q.count, ssim = q.ssim / q.count;
    metrics["vae"] = {{"weights", vae_weights}, {"psnr", psnr}, {"ssim", ssim}, {"images", q.count}};
    if (rt.is_root())
      LOG(INFO) << "VAE " << vae_weights << ": test PSNR " << psnr << " dB, SSIM " << ssim << " (" << q.count << " images)";
  }

  const std::string samples = ec.samples.empty() ? default_samples_path(inv.config) : ec.samples;
  if (fs::exists(samples)) {
    core::Classifier clf = load_classifier(ec.classifier);
    dev.prepare(*clf);
    const data::SamplesInfo info = data::read_samples_info(samples);
    const int64_t n = info.num;
    if (n < 2) throw std::invalid_argument(str(samples, ": ", n, " images; FD needs at least 2"));
    const std::vector<int64_t> test_shape = {test->channels(), test->height(), test->width()};
    if (info.image_shape != test_shape)
      throw std::invalid_argument(lf::str(samples, ": images are ", at::IntArrayRef(info.image_shape),
                                          " but the test split's are ", at::IntArrayRef(test_shape)));
    const bool with_classes = clf->options().num_classes == test->num_classes();
    if (!with_classes && rt.is_root())
      LOG(WARNING) << ec.classifier << " predicts " << clf->options().num_classes << " classes but " << data_cfg.source
                   << " has " << test->num_classes() << ": no class accuracies, FD only";
    auto moments = [&](const std::string& what, const ImageSet& set) {
      auto progress = set_progress(rt, what, set.size, ec.batch_size);
      FeatureMoments m = classify_set(clf, dev, set, ec.batch_size, rank, world, progress.get());
      if (progress) progress->finish();
      m.all_reduce(comm, "all_reduce of the " + what + " feature sums");
      return m;
    };
    FeatureMoments test_m = moments("test features", source_set(*test, test->size()));
    // A text model's samples: each sample's category is that of its prompt as a caption of the
    // test split (held-out captions in, do the images land in the caption's category?).
    const PromptCategories prompts = prompt_categories(samples, *test, with_classes);
    FeatureMoments gen_m = moments("sample features", {n, [&samples, &prompts](int64_t b, int64_t e) {
                                                          auto part = data::read_samples_range(samples, b, e - b);
                                                          if (prompts.label.defined()) part.labels = prompts.of(part.labels);
                                                          return std::make_pair(part.images, part.labels);
                                                        }});
    // The floor: as many real training images (evenly spread over the split) against the test split.
    auto train = open_configured_source(data_cfg, "train");
    const int64_t m = std::min(n, train->size()), train_size = train->size();
    FeatureMoments real_m = moments("real features", {m, [&train, m, train_size](int64_t b, int64_t e) {
                                                        std::vector<at::Tensor> images, labels;
                                                        for (int64_t j = b; j < e; ++j) {
                                                          const int64_t pick = j * train_size / m;
                                                          auto one = train->get(pick, pick + 1);
                                                          images.push_back(one.images);
                                                          labels.push_back(one.labels);
                                                        }
                                                        return std::make_pair(at::cat(images), at::cat(labels));
                                                      }});
    auto [mu_t, s_t] = test_m.statistics();
    auto [mu_g, s_g] = gen_m.statistics();
    auto [mu_r, s_r] = real_m.statistics();
    const double fd = core::frechet_distance(mu_g, s_g, mu_t, s_t);
    const double floor = core::frechet_distance(mu_r, s_r, mu_t, s_t);
    metrics["samples"] = samples;
    metrics["num_samples"] = n;
    metrics["fd"] = fd;
    metrics["fd_floor"] = floor;
    metrics["fd_floor_num_real"] = m;
    metrics["fd_ratio"] = fd / floor;
    metrics["classifier"] = ec.classifier;
    metrics["feature_dim"] = clf->options().feature_dim;
    const bool labelled = with_classes && gen_m.unlabelled == 0;
    if (with_classes) {
      metrics["classifier_test_accuracy"] = test_m.accuracy();
      metrics["classifier_test_macro_accuracy"] = test_m.macro_accuracy();
      metrics["majority_baseline_accuracy"] = test_m.majority_share();
      metrics["majority_baseline_macro_accuracy"] = 1.0 / std::max(1.0, (test_m.class_count > 0).sum().item<double>());
      metrics["real_class_accuracy"] = real_m.accuracy();
    }
    if (labelled && !prompts.label.defined()) {
      metrics["class_accuracy"] = gen_m.accuracy();
      metrics["class_macro_accuracy"] = gen_m.macro_accuracy();
    }
    if (prompts.label.defined() && with_classes) {
      const int64_t matched = gen_m.count - gen_m.unlabelled;
      metrics["prompts"] = prompts.count;
      metrics["samples_with_a_test_caption"] = matched;
      if (matched > 0) {
        metrics["prompt_category_accuracy"] = static_cast<double>(gen_m.correct) / static_cast<double>(matched);
        metrics["prompt_category_macro_accuracy"] = gen_m.macro_accuracy();
        metrics["prompt_vs_classifier_macro"] = gen_m.macro_accuracy() / std::max(1e-12, test_m.macro_accuracy());
        // Per category, which prompts land and which do not: {name: [samples, accuracy, the classifier's]}.
        nlohmann::json per = nlohmann::json::object();
        for (int64_t k = 0; k < test->num_classes(); ++k) {
          const double c = gen_m.class_count[k].item<double>(), t = test_m.class_count[k].item<double>();
          if (c > 0)
            per[test->label_names()[static_cast<size_t>(k)]] = {
                static_cast<int64_t>(c), gen_m.class_correct[k].item<double>() / c,
                t > 0 ? test_m.class_correct[k].item<double>() / t : 0.0};
        }
        metrics["prompt_category_per_class"] = per;
      }
    }
    if (rt.is_root())
      LOG(INFO) << "eval " << samples << ": FD " << fd << " (floor " << floor << " at N = " << m << ", ratio "
                << fd / floor << ")"
                << (metrics.contains("class_accuracy")
                        ? str(", class accuracy ", metrics["class_accuracy"].get<double>() * 100, "%")
                        : "")
                << (metrics.contains("prompt_category_macro_accuracy")
                        ? str(", category accuracy of the prompts' samples (macro) ",
                              metrics["prompt_category_macro_accuracy"].get<double>() * 100, "% vs the classifier's ",
                              metrics["classifier_test_macro_accuracy"].get<double>() * 100, "% on real test images",
                              " (majority baseline ", metrics["majority_baseline_macro_accuracy"].get<double>() * 100,
                              "%)")
                        : "");
  } else if (!metrics.contains("vae")) {
    throw std::invalid_argument(str("eval: nothing to evaluate: no samples at ", samples,
                                    " (run `latentforge sample` or set eval.samples) and no VAE (vae.weights)"));
  } else if (rt.is_root()) {
    LOG(INFO) << "eval: no samples at " << samples << "; VAE metrics only";
  }
  if (!rt.is_root()) return 0;
  std::string out = ec.out;
  if (out.empty())
    out = fs::exists(samples) ? (fs::path(samples).parent_path() / "metrics.json").string() : "metrics.json";
  atomic_write_file(out, metrics.dump(2) + "\n");
  std::cout << "metrics: " << out << "\n" << metrics.dump(2) << std::endl;
  return 0;
}

}  // namespace lf::launch
