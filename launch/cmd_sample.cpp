// `latentforge sample`: generates images from a trained checkpoint (EMA weights by default)
// with DDIM or DDPM (a DDPM-objective model) or Euler or Heun (a flow model) and
// classifier-free guidance, decodes them with the checkpoint's VAE and
// writes grid.png (one row per class, labelled with its name) and samples.h5 (images N,C,H,W
// uint8 + labels), on any number of ranks and on the device sample.device names.
// Sample i's noise, sampler noise and label are keyed by (sample.seed, i): neither the batch
// size nor the number of ranks changes the images (docs/design.md, invariants 2 and 9). The job
// is written in resumable chunks (launch/sample_parts.h) that rank 0 merges.
#include <glog/logging.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <numeric>

#include "core/util/fs.h"
#include "core/util/json.h"
#include "core/util/png.h"
#include "core/util/progress.h"
#include "core/util/tokenizer.h"
#include "core/util/sha256.h"
#include "core/util/strings.h"
#include "data/text_embeddings.h"
#include "distributed/rank_context.h"
#include "launch/checkpoint_model.h"
#include "launch/generate.h"
#include "launch/runtime.h"
#include "launch/sample_parts.h"
#include "launch/stage_device.h"
#include "launch/subcommands.h"
#include "launch/train_parts.h"
#include "launch/training_grid.h"

namespace fs = std::filesystem;

namespace lf::launch {

namespace {

// sample.classes: "all" or a comma-separated list of class ids below num_classes.
std::vector<int64_t> parse_classes(const std::string& spec, int64_t num_classes) {
  std::vector<int64_t> out;
  if (num_classes == 0) return {0};
  if (trim(spec) == "all") {
    for (int64_t k = 0; k < num_classes; ++k) out.push_back(k);
    return out;
  }
  for (const auto& part : split(spec, ',')) {
    char* end = nullptr;
    std::string p = trim(part);
    long long v = std::strtoll(p.c_str(), &end, 10);
    if (p.empty() || *end != '\0' || v < 0 || v >= num_classes)
      throw UsageError(str("sample.classes = '", spec, "': '", p, "' is not a class id in [0, ", num_classes - 1,
                           "] (or use all)"));
    out.push_back(v);
  }
  return out;
}

// A text model's prompts: sample.prompt, then the non-blank lines of sample.prompt_file.
std::vector<std::string> read_prompts(const SampleConfig& s) {
  constexpr size_t kMaxPromptBytes = 64 << 20;
  std::vector<std::string> out;
  if (!s.prompt.empty()) out.push_back(s.prompt);
  if (!s.prompt_file.empty()) {
    if (!fs::is_regular_file(s.prompt_file))
      throw UsageError(str("sample.prompt_file = ", s.prompt_file, ": no such file (one prompt per line)"));
    const std::string text = read_file(s.prompt_file, kMaxPromptBytes);
    int64_t line_no = 0;
    for (const std::string& raw : split(text, '\n')) {
      ++line_no;
      std::string line = raw;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (trim(line).empty()) continue;
      if (valid_utf8(nlohmann::json(line)).get<std::string>() != line)
        throw UsageError(str(s.prompt_file, ":", line_no, ": the prompt is not valid UTF-8"));
      out.push_back(line);
    }
    if (out.empty()) throw UsageError(str("sample.prompt_file = ", s.prompt_file, " holds no prompt (all lines blank)"));
  }
  return out;
}

// What the job conditions on: K classes (class ids; {0} for an unconditional model) or K
// prompts (a text model, whose "class" i is prompt i). Sample i gets condition i mod K.
struct Conditions {
  std::vector<int64_t> classes;
  std::vector<std::string> prompts;
  // A text model's K captions: tokens [K, context_length], or embeddings [K, L, D] and mask.
  core::TextInput prompt_text;
  std::string embeddings_sha256;  // sample.prompt_embeddings' file
  int64_t count() const { return static_cast<int64_t>(classes.size()); }
};

Conditions job_conditions(const core::DenoiserModule& model, const SampleConfig& s) {
  Conditions c;
  if (model.context_length() == 0) {
    if (!s.prompt.empty() || !s.prompt_file.empty() || !s.prompt_embeddings.empty())
      throw UsageError("sample.prompt / sample.prompt_file / sample.prompt_embeddings are for text models; this "
                       "checkpoint's model is not conditioned on captions (use sample.classes)");
    c.classes = parse_classes(s.classes, model.num_classes());
    return c;
  }
  if (model.text_embedding_dim() > 0) {
    if (s.prompt_embeddings.empty() || !s.prompt.empty() || !s.prompt_file.empty())
      throw UsageError(str("this checkpoint's model reads caption embeddings computed elsewhere (", model.context_length(),
                           " x ", model.text_embedding_dim(), " per caption): give the prompts' embeddings in "
                           "sample.prompt_embeddings (an HDF5 file: embedding, mask, text; docs/cache.md), and no "
                           "sample.prompt or sample.prompt_file"));
    if (!fs::is_regular_file(s.prompt_embeddings))
      throw UsageError(str("sample.prompt_embeddings = ", s.prompt_embeddings, ": no such file"));
    data::TextEmbeddingFile file(s.prompt_embeddings, "text");
    if (file.length() != model.context_length() || file.dim() != model.text_embedding_dim())
      throw UsageError(str(s.prompt_embeddings, ": dataset 'embedding' holds ", file.length(), " x ", file.dim(),
                           " per prompt, the model reads ", model.context_length(), " x ", model.text_embedding_dim(),
                           " (the embeddings it was trained on)"));
    c.prompts = file.keys();
    std::vector<int64_t> rows(c.prompts.size());
    std::iota(rows.begin(), rows.end(), 0);
    file.read(rows, &c.prompt_text.embeddings, &c.prompt_text.mask);
    c.embeddings_sha256 = file.sha256();
    for (int64_t k = 0; k < static_cast<int64_t>(c.prompts.size()); ++k) c.classes.push_back(k);
    return c;
  }
  if (!s.prompt_embeddings.empty())
    throw UsageError(str("sample.prompt_embeddings = ", s.prompt_embeddings, " but this checkpoint's model has its own "
                         "text encoder: give sample.prompt or sample.prompt_file"));
  c.prompts = read_prompts(s);
  if (c.prompts.empty())
    throw UsageError("this checkpoint's model is conditioned on captions: give sample.prompt or sample.prompt_file");
  for (int64_t k = 0; k < static_cast<int64_t>(c.prompts.size()); ++k) c.classes.push_back(k);
  const ByteTokenizer::Batch tokens = ByteTokenizer(model.context_length()).encode(c.prompts);
  c.prompt_text.tokens = tokens.tokens;
  if (tokens.truncated > 0)
    LOG(WARNING) << tokens.truncated << " of " << c.prompts.size() << " prompt(s) are longer than the model's "
                 << model.context_length() << " tokens (UTF-8 bytes + 2) and are cut, as training cut its captions";
  return c;
}

// Everything that decides the images of a job (not the batch size, the ranks or the chunk
// files' location): a chunk made under another description is never reused.
std::string job_description(const TrainedModel& m, const SampleConfig& s, const Conditions& conditions,
                            const StageDevice& dev) {
  const std::vector<int64_t>& classes = conditions.classes;
  nlohmann::json j = {{"checkpoint_state_sha256", sha256_hex(read_file((fs::path(m.checkpoint) / "state.json").string()))},
                      {"step", m.step}, {"use_ema", s.use_ema}, {"vae_sha256", m.autoencoder.hash()},
                      {"sampler", core::to_string(s.sampler)}, {"steps", s.steps}, {"eta", s.eta},
                      {"spacing", core::to_string(s.spacing)}, {"guidance", s.guidance}, {"seed", s.seed},
                      {"classes", classes}, {"num", s.num}, {"chunk_size", s.chunk_size},
                      {"device_type", dev.is_cuda() ? "cuda" : "cpu"}, {"precision", precisions().name(dev.precision())}};
  if (!conditions.prompts.empty()) j["prompts"] = conditions.prompts;
  if (!conditions.embeddings_sha256.empty()) j["prompt_embeddings_sha256"] = conditions.embeddings_sha256;
  return j.dump();
}

// The todo list, decided by rank 0 (which prepared parts/) and broadcast to every rank.
std::vector<int64_t> agree_on_todo(Runtime& rt, SampleParts& parts) {
  std::vector<int64_t> todo;
  if (rt.is_root()) todo = parts.prepare();
  if (rt.world() == 1) return todo;
  at::Tensor n = at::full({1}, static_cast<int64_t>(todo.size()), at::kLong);
  rt.comm().broadcast(n, 0, "broadcast of the number of chunks to sample");
  at::Tensor list = rt.is_root() ? at::tensor(todo, at::kLong) : at::empty({n.item<int64_t>()}, at::kLong);
  if (list.numel() > 0) rt.comm().broadcast(list, 0, "broadcast of the chunks to sample");
  return std::vector<int64_t>(list.data_ptr<int64_t>(), list.data_ptr<int64_t>() + list.numel());
}

// The grid: one row per class or prompt (the first 32 prompts), up to 10 samples each, read back
// from samples.h5, labelled with the class names or the prompts.
void write_grid(const std::string& samples, const std::string& grid, int64_t n, const Conditions& conditions,
                int64_t num_classes, const std::vector<std::string>& label_names, int64_t* per_row_out) {
  const std::vector<int64_t>& classes = conditions.classes;
  const int64_t all = static_cast<int64_t>(classes.size());
  const int64_t k = conditions.prompts.empty() ? all : std::min<int64_t>(all, 32);
  int64_t per_row = std::min<int64_t>(10, std::max<int64_t>(1, n / k));
  at::Tensor images = data::read_samples_range(samples, 0, std::min(n, per_row * all)).images.to(at::kFloat) / 127.5 - 1.0;
  std::vector<at::Tensor> rows;
  for (int64_t c = 0; c < k; ++c) {
    // Fewer samples than classes leave the last rows empty (padding).
    at::Tensor idx = at::arange(c, std::max(c, std::min(n, c + per_row * all)), all, at::kLong);
    at::Tensor row = images.index_select(0, idx);
    if (row.size(0) < per_row)
      row = at::cat({row, at::full({per_row - row.size(0), images.size(1), images.size(2), images.size(3)}, -1.0)});
    rows.push_back(row);
  }
  std::vector<std::string> row_labels;
  if (!conditions.prompts.empty())
    row_labels.assign(conditions.prompts.begin(), conditions.prompts.begin() + k);
  else if (num_classes > 0)
    row_labels = class_row_labels(classes, label_names);
  write_png_grid(grid, at::cat(rows), per_row, row_labels);
  *per_row_out = per_row;
}

}  // namespace

int run_sample(const Invocation& inv) {
  const SampleConfig& s = inv.config.sample();
  const DistConfig& dist_cfg = inv.config.dist();
  Runtime rt(s.device, dist_cfg, "sample.device", /*device_collectives=*/false);
  StageDevice dev = stage_device(rt.device(), s.precision, "sample.precision");
  std::string ckpt_path = s.checkpoint.empty() ? inv.config.value("train.run_dir") : s.checkpoint;
  TrainedModel m = load_trained_model(ckpt_path, s.use_ema, inv.config.value("vae.weights"));
  const int64_t num_classes = m.model->num_classes();
  const Conditions conditions = job_conditions(*m.model, s);
  const bool text = !conditions.prompts.empty();
  const LDMObjective objective(m.diffusion);
  objective.check_sampling(s.sampler, s.steps);
  std::string out_dir = s.out_dir;
  if (out_dir.empty()) out_dir = (fs::path(m.checkpoint).parent_path().parent_path() / "samples").string();
  if (rt.is_root()) fs::create_directories(out_dir);
  dev.prepare(*m.model);
  m.autoencoder.to(dev.device(), dev.dtype());

  const int64_t n = s.num, k = conditions.count();
  const at::Tensor class_ids = at::tensor(conditions.classes, at::kLong);
  GenerateOptions g;
  g.sampler = s.sampler;
  g.steps = s.steps;
  g.eta = s.sampler == core::SamplerKind::kDDPM ? 1.0 : s.eta;
  g.spacing = s.spacing;
  g.guidance = s.guidance;
  g.seed = static_cast<uint64_t>(s.seed);
  // Negative control for the tests: per-rank seeding (what DiT does) must change the images.
  if (read_debug_switches().rank_noise) {
    g.seed += static_cast<uint64_t>(rt.rank());
    LOG(WARNING) << "LF_DEBUG_RANK_NOISE: sample noise keyed by sample.seed + rank (breaks invariant 2 on purpose)";
  }
  g.autocast = dev.autocasts();

  SampleParts parts(out_dir, ChunkPlan{n, s.chunk_size}, job_description(m, s, conditions, dev));
  const std::vector<int64_t> todo = agree_on_todo(rt, parts);
  const ChunkPlan& plan = parts.plan();
  const std::vector<int64_t> image_shape = {m.autoencoder.image_channels(),
                                            m.latent_shape[1] * m.autoencoder.downsample_factor(),
                                            m.latent_shape[2] * m.autoencoder.downsample_factor()};
  LOG(INFO) << "sampling " << n << " images from " << m.checkpoint << " (step " << m.step << ", "
            << (s.use_ema ? "EMA" : "raw") << " weights): " << core::to_string(s.sampler) << " " << s.steps
            << " steps, guidance " << s.guidance << ", seed " << s.seed << ", "
            << (text ? str(k, " prompt(s)") : num_classes ? str(k, " class(es)") : "unconditional") << "; " << rt.world() << " rank(s) on "
            << dev.describe() << "; " << plan.num_chunks() << " chunk(s) of " << s.chunk_size << ", "
            << todo.size() << " to sample (" << plan.num_chunks() - static_cast<int64_t>(todo.size())
            << " already in " << parts.dir() << ")";

  if (rt.is_root() && plan.num_chunks() < rt.world())
    LOG(WARNING) << "the job has " << plan.num_chunks() << " chunk(s) for " << rt.world() << " ranks: "
                 << rt.world() - plan.num_chunks() << " rank(s) will have nothing to sample (sample.chunk_size = "
                 << s.chunk_size << "; " << (n + rt.world() - 1) / rt.world() << " or less gives every rank a chunk)";
  // Progress (rank 0) counts the whole job: its own images as they are written and the other
  // ranks' chunks as they appear.
  int64_t todo_images = 0;
  for (int64_t c : todo) todo_images += plan.count(c);
  std::unique_ptr<Progress> progress;
  if (rt.is_root())
    progress = std::make_unique<Progress>(rt.world() > 1 ? str("sample (", rt.world(), " ranks)") : "sample",
                                          todo_images, "images");
  std::vector<int64_t> mine;  // the chunks this rank claimed and sampled
  int64_t own_done = 0;
  auto update_progress = [&] {
    int64_t others = 0;
    if (rt.world() > 1)
      for (int64_t c : todo)
        if (std::find(mine.begin(), mine.end(), c) == mine.end() && parts.exists(c)) others += plan.count(c);
    progress->update(own_done + others);
  };
  const std::string who = str("rank ", rt.rank(), " of ", rt.world(), " on ", dist::local_host_name());
  double longest_chunk_s = 0;
  const auto sampling_start = std::chrono::steady_clock::now();
  for (int64_t c : todo) {
    if (!parts.claim(c, who)) continue;  // another rank has it
    mine.push_back(c);
    auto started = std::chrono::steady_clock::now();
    const int64_t first = plan.begin(c), count = plan.count(c);
    auto writer = parts.open_chunk(c, image_shape, text ? std::vector<std::string>{} : m.label_names);
    const int64_t batches = (count + s.batch_size - 1) / s.batch_size;
    // Batch j of the chunk: ids (global sample indices) and labels (class of sample i:
    // classes[i % K], so any N covers the classes evenly; for a text model the prompt index).
    auto batch = [&](int64_t j) {
      const int64_t b = first + j * s.batch_size;
      at::Tensor ids = at::arange(b, std::min(b + s.batch_size, first + count), at::kLong);
      return at::stack({ids, class_ids.index_select(0, ids % k)});
    };
    dev.pipeline(
        batches, batch,
        [&](const at::Tensor& ids_labels) {
          GenerateOptions gb = g;
          gb.batch_size = ids_labels.size(1);
          core::TextInput captions = text ? conditions.prompt_text.rows(ids_labels[1].cpu()) : core::TextInput();
          at::Tensor z =
              generate_latents(*m.model, objective, ids_labels[0], ids_labels[1], m.latent_shape, gb, {}, captions);
          at::Tensor images;
          {
            auto autocast = dev.autocast();
            images = m.autoencoder.decode(z / m.scale_factor, gb.batch_size);
          }
          images = images.to(dev.dtype());
          return std::vector<at::Tensor>{((images.clamp(-1, 1) + 1) * 127.5).round().to(at::kByte)};
        },
        [&](int64_t j, std::vector<at::Tensor>& out) {
          at::Tensor labels = batch(j)[1];
          if (num_classes == 0 && !text) labels.fill_(-1);
          writer->write(j * s.batch_size, out[0], labels);
          own_done += labels.size(0);
          if (progress) update_progress();
        });
    parts.commit_chunk(*writer);
    longest_chunk_s = std::max(longest_chunk_s, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  }
  if (rt.world() > 1) {
    // Ranks claim chunks as they go, so they finish within about one chunk of each other: allow
    // a peer our own sampling time again plus two chunks before calling it hung.
    const double sampling_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - sampling_start).count();
    double wait_s = mine.empty() ? dist_cfg.checkpoint_timeout_s : dist_cfg.timeout_s + sampling_s + 2 * longest_chunk_s;
    rt.comm().barrier(dist::Deadline::after(dist::Seconds(wait_s)), "barrier after sampling every chunk");
  }
  if (progress) {
    progress->update(todo_images);
    progress->finish();
  }
  LOG(INFO) << "sampled " << mine.size() << " of " << todo.size() << " chunk(s) on this rank";
  if (rt.is_root()) {
    Progress merging("merge", n, "images");
    std::map<std::string, std::string> attributes;
    if (text) attributes["prompts"] = nlohmann::json(conditions.prompts).dump();
    parts.merge(image_shape, text ? std::vector<std::string>{} : m.label_names, attributes, &merging);
    merging.finish();
    const std::string h5 = parts.samples_path();
    const std::string grid = (fs::path(out_dir) / "grid.png").string();
    int64_t per_row = 0;
    write_grid(h5, grid, n, conditions, num_classes, m.label_names, &per_row);
    LOG(INFO) << "wrote " << grid << " (" << k << " row(s) x " << per_row << ") and " << h5 << " (" << n << " images)";
    std::cout << "grid: " << grid << "\nsamples: " << h5 << std::endl;
  }
  // The ranks end together (a merge of many images outlasts the start-up/finalize deadlines).
  if (rt.world() > 1)
    rt.comm().barrier(dist::Deadline::after(dist::Seconds(dist_cfg.checkpoint_timeout_s)),
                      "barrier while rank 0 merges the chunks into samples.h5");
  return 0;
}

}  // namespace lf::launch
