// The one training loop (see train_loop.h). Invariants it keeps (docs/design.md): per-sample
// draws are the trainer's, keyed by (seed, epoch, sample index), so W ranks x B/W == 1 rank x B;
// a resumed run equals one never stopped; a checkpoint is written whole or not at all; every rank
// stops at the same step boundary.
#include "launch/train_loop.h"

#include <glog/logging.h>
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "core/safetensors.h"
#include "core/state_dict.h"
#include "core/util/crash_point.h"
#include "core/util/fs.h"
#include "core/util/sha256.h"
#include "core/util/strings.h"
#include "distributed/agreement.h"
#include "launch/checkpoint_tensors.h"
#include "launch/cli.h"
#include "launch/config_registry.h"
#include "launch/job.h"
#include "launch/lr_schedule.h"
#include "launch/model_io.h"

namespace fs = std::filesystem;

namespace lf::launch {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The checkpoint parts (checkpoint_tensors.h) of a trained module: its weights and its optimizer.
std::string weights_stem(const std::string& module) { return module; }
std::string optimizer_stem(const std::string& module) {
  return module == "model" ? "optimizer" : module + "_optimizer";
}
std::string whole_file(const std::string& stem) { return stem + ".safetensors"; }
std::string shard_file(const std::string& stem, int rank, int world) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "-%05d-of-%05d.safetensors", rank, world);
  return stem + buf;
}

void hash_tensors(Sha256& h, const std::vector<std::pair<std::string, at::Tensor>>& named) {
  for (const auto& [name, t] : named) {
    h.update(name);
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    h.update(c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size());
  }
}

// The modules' parameters and buffers, as loaded.
std::string module_digest(const std::vector<TrainedModule>& modules) {
  Sha256 h;
  for (const auto& m : modules) {
    std::vector<std::pair<std::string, at::Tensor>> named;
    for (const auto& p : m.module->named_parameters()) named.emplace_back(p.key(), p.value());
    for (const auto& b : m.module->named_buffers()) named.emplace_back(b.key(), b.value());
    hash_tensors(h, named);
  }
  return h.hex();
}

}  // namespace

struct TrainingLoop::Group {
  TrainedModule module;
  ParamGroup params;
  bool active = true;  // trained at the step being made
};

void Trainer::log_values(const std::vector<double>& means, int64_t, nlohmann::json& values) {
  std::vector<std::string> names = logged_names();
  for (size_t i = 0; i < names.size() && i < means.size(); ++i) values[names[i]] = means[i];
}

TrainingLoop::TrainingLoop(std::string kind, const TrainLoopConfig& loop, const DistConfig& dist, Runtime& rt,
                           nlohmann::json config_json, std::string config_ini)
    : kind_(kind),
      loop_(loop),
      dist_(dist),
      rt_(rt),
      session_(std::move(kind), loop, dist, rt.cpu_comm(), std::move(config_json)),
      debug_(read_debug_switches()),
      precision_(resolve_precision(loop.precision, rt.device(), loop.section + ".precision")),
      param_dtype_(precision_ == Precision::kF64 ? at::kDouble : at::kFloat),
      amp_(precision_, rt.device()),
      config_ini_(std::move(config_ini)) {
  check_batch_layout(loop_, rt.world());
  if (debug_.any())
    LOG(WARNING) << "debug switches active (results will NOT match an ordinary run):"
                 << (debug_.sum_grads ? " LF_DEBUG_SUM_GRADS" : "") << (debug_.rank_noise ? " LF_DEBUG_RANK_NOISE" : "")
                 << (debug_.throw_at_step >= 0 ? str(" LF_DEBUG_THROW_AT_STEP=", debug_.throw_at_step,
                                                     " LF_DEBUG_THROW_RANK=", debug_.throw_rank)
                                               : "");
}

TrainingLoop::~TrainingLoop() = default;

uint64_t TrainingLoop::draw_seed() const {
  return static_cast<uint64_t>(loop_.seed) + (debug_.rank_noise ? static_cast<uint64_t>(rt_.rank()) : 0);
}

void TrainingLoop::copy_eval_weights(torch::nn::Module& target) const {
  std::vector<at::Tensor> ps;
  for (auto& p : target.parameters()) ps.push_back(p);
  at::NoGradGuard ng;
  if (loop_.ema_decay > 0 && groups_.front().params.sharded) {
    CHECK(ema_in_buckets_) << "the sharded EMA was not gathered for this step";
    const dist::Reducer& r = *groups_.front().params.reducer;
    for (size_t i = 0; i < ps.size(); ++i) ps[i].copy_(r.grad_view(i));
    return;
  }
  if (loop_.ema_decay > 0) {
    ema_->copy_to(ps);
    return;
  }
  const std::vector<at::Tensor>& src = groups_.front().params.params;
  for (size_t i = 0; i < ps.size() && i < src.size(); ++i) ps[i].copy_(src[i]);
}

void TrainingLoop::make_groups(const std::vector<TrainedModule>& modules) {
  // On 2^k ranks the reducer only sums, and the 1/W factor rides on passes that read the
  // gradients anyway (the norm and AdamW): one pass over all gradients fewer per step, bitwise
  // the same result, since scaling by a power of two is exact. LF_DEBUG_SUM_GRADS (the negative
  // control of the rank-equivalence tests) sums and never scales.
  const int64_t world = rt_.world();
  const bool fold = world > 1 && (world & (world - 1)) == 0 && !debug_.sum_grads;
  grad_scale_ = fold ? 1.0 / static_cast<double>(world) : 1.0;
  const dist::GradReduction reduction =
      debug_.sum_grads || fold ? dist::GradReduction::kSum : dist::GradReduction::kAverage;
  groups_.clear();
  for (const auto& m : modules) {
    Group g;
    g.module = m;
    g.params = make_param_group(*m.module, loop_, m.lr, dist_, rt_, reduction);
    groups_.push_back(std::move(g));
  }
  ema_ = std::make_unique<core::EMA>(groups_.front().params.updated(), loop_.ema_decay, loop_.ema_warmup != 0);
}

int64_t TrainingLoop::state_bytes() const {
  int64_t bytes = 0;
  auto add = [&](const at::Tensor& t) { bytes += t.numel() * static_cast<int64_t>(t.element_size()); };
  for (const auto& g : groups_)
    for (const auto& [name, t] : g.params.optimizer->state()) add(t);
  for (const auto& t : ema_->averages()) add(t);
  return bytes;
}

int64_t TrainingLoop::peak_rss_bytes() {
  struct rusage u {};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;  // Linux: kilobytes
}

void TrainingLoop::log_memory(const std::string& what, int64_t local_bytes) {
  std::vector<int64_t> all{local_bytes};
  if (rt_.world() > 1) {
    all.clear();
    for (const auto& v : dist::gather_values(rt_.cpu_comm(), {local_bytes}, "gather of " + what)) all.push_back(v[0]);
  }
  if (!rt_.is_root()) return;
  std::vector<std::string> parts;
  for (int64_t b : all) parts.push_back(str(b));
  LOG(INFO) << what << " per rank (bytes): " << join(parts, " ")
            << (groups_.front().params.sharded ? " (sharded over the ranks: dist.shard_optimizer)" : "");
}

void TrainingLoop::gather_eval_weights() {
  const ParamGroup& g = groups_.front().params;
  if (!g.sharded || loop_.ema_decay <= 0) return;
  // Into the gradient buckets, free between steps: no copy of the model on any rank.
  g.reducer->gather_into_buckets(ema_->averages(), "the EMA for evaluation");
  ema_in_buckets_ = true;
}

void TrainingLoop::release_eval_weights() {
  if (!ema_in_buckets_) return;
  zero_grads(groups_.front().params.params);  // the buckets are the gradients again
  ema_in_buckets_ = false;
}

void TrainingLoop::restore(Trainer& trainer, const std::optional<std::string>& ckpt) {
  if (!ckpt) return;
  // Any layout into any layout: a sharded run reads its segments' ranges, an unsharded one whole
  // tensors, from whole files or from another world size's shards alike (checkpoint_tensors.h).
  for (auto& g : groups_) {
    CheckpointPart part(*ckpt, saved_state_, optimizer_stem(g.module.name));
    g.params.optimizer->load_state(part.read_like(g.params.optimizer->state()));
  }
  auto e = CheckpointPart(*ckpt, saved_state_, "ema").read_like(ema_->state());
  ema_->load_state(core::NamedTensors(e.begin(), e.end()));
  bad_steps_ = saved_state_.value("bad_steps", int64_t{0});
}

int64_t TrainingLoop::load_weights(Trainer& trainer, const std::vector<TrainedModule>& modules,
                                   const std::string& ckpt) {
  saved_state_text_ = read_file((fs::path(ckpt) / "state.json").string());
  try {
    saved_state_ = nlohmann::json::parse(saved_state_text_);
  } catch (const nlohmann::json::exception& e) {  // rank 0 verified it: this rank reads another file
    throw std::runtime_error(str(ckpt, "/state.json: not valid JSON on this rank (", e.what(), ")"));
  }
  trainer.check_resume(saved_state_, ckpt);
  for (const auto& m : modules)
    load_module_weights_from_map(*m.module, CheckpointPart(ckpt, saved_state_, weights_stem(m.name)).consolidate(),
                                 (fs::path(ckpt) / whole_file(weights_stem(m.name))).string());
  const int64_t step = saved_state_.at("step").get<int64_t>();
  if (rt_.is_root()) LOG(INFO) << "resuming from " << ckpt << " at step " << step;
  return step;
}

std::string TrainingLoop::loaded_digest(const std::string& weights_digest) const {
  Sha256 h;
  h.update(saved_state_text_);
  h.update(weights_digest);
  // A sharded run's optimizer and EMA differ between ranks by design (each holds its own part).
  for (const auto& g : groups_)
    if (!g.params.sharded) hash_tensors(h, g.params.optimizer->state());
  if (!groups_.front().params.sharded) hash_tensors(h, ema_->state());
  return h.hex();
}

int TrainingLoop::run(Trainer& trainer, const TrainFlags& flags) {
  session_.lock_run_dir(flags.break_lock);
  pause_point("loop.start_up");  // the stop handlers are in place (the constructor installed them)
  trainer.open_data(*this);
  epoch_size_ = std::max<int64_t>(1, trainer.epoch_size());
  std::optional<std::string> ckpt = session_.resolve_resume(flags.resume);
  // Initialisation draws from torch's generator: the same on every rank and for any rank count.
  at::manual_seed(static_cast<uint64_t>(loop_.seed));
  std::vector<TrainedModule> modules = trainer.build_modules(*this);
  int64_t start_step = 0;
  std::string weights_digest;
  if (ckpt) {
    start_step = load_weights(trainer, modules, *ckpt);
    weights_digest = module_digest(modules);  // before the reducer overwrites them with rank 0's
  } else if (!loop_.init_from.empty()) {
    trainer.init_from(loop_.init_from);
    if (rt_.is_root()) LOG(INFO) << "initialised from " << loop_.init_from << " (fine-tuning; step 0)";
  }
  make_groups(modules);
  restore(trainer, ckpt);
  if (ckpt) session_.check_same_checkpoint(loaded_digest(weights_digest), *ckpt);
  log_memory("optimizer + EMA state", state_bytes());
  if (rt_.is_root())
    LOG(INFO) << trainer.describe() << "; " << rt_.world() << " rank(s), global batch " << loop_.batch_size << " ("
              << loop_.grad_accum << " micro-batch(es)), " << describe(precision_) << " on " << rt_.device().str();
  trainer.start(*this, start_step);

  session_.begin(start_step, saved_state_.is_null() ? 0.0 : saved_state_.value("train_seconds", 0.0));
  if (rt_.is_root())
    atomic_write_file((fs::path(loop_.run_dir) / "config.ini").string(),
                      "# The resolved config of this run (latentforge " + std::string(LF_VERSION) +
                          "); rerun with --config config.ini\n" + config_ini_);
  LossWindow logged(trainer.logged_names().size());
  step_ = start_step;
  while (step_ < loop_.steps) {
    next_ = step_ + 1;
    if (next_ == debug_.throw_at_step && rt_.rank() == debug_.throw_rank)
      throw std::runtime_error(str("injected failure at step ", next_, " (LF_DEBUG_THROW_AT_STEP)"));
    StepTimes times;
    nlohmann::json values;
    logged.add(step(trainer, times, values));
    step_ = next_;
    if (step_ % loop_.log_every == 0 || step_ == loop_.steps) {
      trainer.log_values(logged.take_means(rt_.cpu_comm()), step_, values);
      values["epoch"] = static_cast<double>(step_ * loop_.batch_size) / static_cast<double>(epoch_size_);
    }
    trainer.after_step(*this, step_, values);
    session_.record_step(step_, loop_.steps, loop_.batch_size, times, values);
    if (step_ != loop_.steps && trainer.wants_eval_weights(step_)) gather_eval_weights();
    if (step_ != loop_.steps && trainer.periodic(*this, step_))
      session_.wait_for_root(str("the wait for rank 0's sample grid or evaluation at step ", step_));
    release_eval_weights();

    pause_point("loop.step_end");  // LF_PAUSE_AT=loop.step_end:K: a signal exactly after step K
    StopRequest stop = session_.agree_stop();
    if (rt_.is_root()) session_.check_checkpoint_writer();  // a failed background save ends the job now
    const bool exiting = stop != StopRequest::kNone || step_ == loop_.steps;
    if (step_ % loop_.ckpt_every == 0 || exiting) save(trainer, exiting);
    if (stop != StopRequest::kNone && step_ < loop_.steps) {  // a stop at the last step just finishes
      const int code = stop == StopRequest::kRequeue ? kExitRequeue : kExitTerminated;
      if (rt_.is_root())
        LOG(WARNING) << (stop == StopRequest::kRequeue ? "SIGUSR1" : "SIGTERM") << ": checkpoint of step " << step_
                     << " written; exiting with " << code
                     << (stop == StopRequest::kRequeue ? " (requeue me)" : " (terminated)");
      return code;
    }
  }
  if (start_step < loop_.steps) {
    gather_eval_weights();
    trainer.finish(*this, step_);
    session_.wait_for_root("the wait for rank 0's final grid and evaluation at the end of training");
  }
  log_memory("peak resident memory (RSS)", peak_rss_bytes());
  if (rt_.is_root()) LOG(INFO) << "training done at step " << step_ << "; checkpoints in " << session_.checkpoints().dir();
  return kExitOk;
}

std::vector<double> TrainingLoop::step(Trainer& trainer, StepTimes& times, nlohmann::json& values) {
  for (size_t i = 0; i < groups_.size(); ++i) groups_[i].active = trainer.trains(i, next_);
  std::vector<double> logged(trainer.logged_names().size(), 0.0);
  for (int64_t a = 0; a < loop_.grad_accum; ++a) {
    const bool last = a + 1 == loop_.grad_accum;
    for (auto& g : groups_)
      if (g.active && g.params.reducer) g.params.reducer->set_sync(last);
    trainer.micro_step(MicroStep{step_, a, last, &amp_, &times}, logged);
  }
  auto ts = Clock::now();
  for (auto& g : groups_) {
    if (!g.active || !g.params.reducer) continue;
    g.params.reducer->set_step(step_);
    g.params.reducer->finish_backward();
  }
  times.sync += since(ts);
  auto to = Clock::now();
  apply_update(values);
  times.optimizer += since(to);
  return logged;
}

bool TrainingLoop::apply_update(nlohmann::json& values) {
  std::vector<double> norms(groups_.size(), 0.0);
  bool finite = true;
  for (size_t i = 0; i < groups_.size(); ++i) {
    if (!groups_[i].active) continue;
    const ParamGroup& g = groups_[i].params;
    if (g.sharded) {  // this rank's part of the squared norm, summed over ranks in rank order
      const double local = amp_.unscale_and_norm(g.updated_tensors());
      norms[i] = std::sqrt(g.reducer->sum_over_ranks(local * local, "the sum of the gradient norm's parts")) * grad_scale_;
    } else {
      norms[i] = amp_.unscale_and_norm(g.params) * grad_scale_;
    }
    finite = finite && std::isfinite(norms[i]);
  }
  const double lr = learning_rate(loop_.lr, loop_.lr_schedule, loop_.warmup_steps, loop_.min_lr_ratio, next_, loop_.steps);
  if (finite) {
    for (size_t i = 0; i < groups_.size(); ++i) {
      Group& g = groups_[i];
      if (!g.active) continue;
      const std::vector<at::Tensor> updated = g.params.updated_tensors();
      core::clip_grad_norm(updated, loop_.grad_clip, norms[i]);
      // Every module follows the schedule of the loop's lr, scaled to its own peak.
      const double module_lr = g.module.lr == loop_.lr ? lr : g.module.lr * lr / std::max(loop_.lr, 1e-30);
      g.params.optimizer->step(module_lr, grad_scale_);
      if (i == 0) ema_->update(updated);
      // Sharded: every rank updated its segments; all of them, to every rank, before the next forward.
      if (g.params.sharded) g.params.reducer->all_gather_params("the updated parameters");
    }
    bad_steps_ = 0;
  } else {
    ++bad_steps_;
    LOG(WARNING) << "step " << next_ << ": non-finite gradient (norm " << norms[0] << "), update skipped ("
                 << bad_steps_ << " in a row)";
    if (bad_steps_ >= loop_.max_bad_steps)
      throw std::runtime_error(str(bad_steps_, " consecutive steps with non-finite loss or gradients (", loop_.section,
                                   ".max_bad_steps = ", loop_.max_bad_steps, "); lower ", loop_.section,
                                   ".lr or check the data"));
  }
  amp_.update(finite);
  for (auto& g : groups_) zero_grads(g.params.params);
  values["lr"] = lr;
  values["grad_norm"] = norms[0];
  values["skipped"] = !finite;
  return finite;
}

namespace {

// Copies `tensors` into `host` (CPU, contiguous), reusing host's tensor of a name where shape and
// dtype fit: the async checkpoint's buffers, allocated once.
void copy_to_host(const core::TensorMap& tensors, core::TensorMap& host) {
  for (auto it = host.begin(); it != host.end();) it = tensors.count(it->first) ? std::next(it) : host.erase(it);
  for (const auto& [name, t] : tensors) {
    at::Tensor src = t.detach();
    at::Tensor& dst = host[name];
    if (!dst.defined() || dst.sizes() != src.sizes() || dst.scalar_type() != src.scalar_type())
      dst = at::empty(src.sizes(), src.options().device(at::kCPU));
    dst.copy_(src);
  }
}

core::TensorMap as_map(const NamedTensors& named) {
  core::TensorMap m;
  for (const auto& [k, t] : named) m[k] = t;
  return m;
}

}  // namespace

void TrainingLoop::save(Trainer& trainer, bool exiting) {
  const auto t0 = Clock::now();
  nlohmann::json state;
  state["samples_seen"] = step_ * loop_.batch_size;
  state["epoch"] = static_cast<double>(step_ * loop_.batch_size) / static_cast<double>(epoch_size_);
  state["seed"] = loop_.seed;
  state["bad_steps"] = bad_steps_;
  trainer.checkpoint_state(state);
  // What each file holds, by file name: the live tensors (a synchronous save writes them before
  // training goes on) or, for a background save, host copies taken now.
  std::vector<std::pair<std::string, core::TensorMap>> contents;
  uint64_t bytes = 0;
  for (auto& g : groups_)
    for (const auto& p : g.params.params) bytes += p.numel() * p.element_size() * 3;
  for (const auto& p : groups_.front().params.params) bytes += p.numel() * p.element_size();
  if (groups_.front().params.sharded) {
    save_sharded(std::move(state), bytes);
    if (rt_.is_root())
      LOG(INFO) << "checkpoint of step " << step_ << ": training blocked for " << int(since(t0) * 1000)
                << " ms (written by every rank in parallel)";
    return;
  }
  for (auto& g : groups_) {
    contents.emplace_back(whole_file(weights_stem(g.module.name)), core::state_dict(*g.module.module));
    contents.emplace_back(whole_file(optimizer_stem(g.module.name)), as_map(g.params.optimizer->state()));
  }
  contents.emplace_back(whole_file("ema"), as_map(ema_->state()));

  std::vector<CheckpointFile> files;
  if (!loop_.async_checkpoint || exiting) {
    for (auto& [name, tensors] : contents)
      files.push_back({name, [&t = tensors](const std::string& p) { core::save_safetensors(p, t); }});
    session_.save_checkpoint(step_, state, files, bytes);
    if (rt_.is_root())
      LOG(INFO) << "checkpoint of step " << step_ << ": training blocked for " << int(since(t0) * 1000)
                << " ms (written synchronously)";
    return;
  }
  if (!rt_.is_root()) return;  // rank 0 writes; the others go on at once
  // At most one save in flight: the previous one is committed before its buffers are reused.
  const double waited = session_.wait_checkpoint();
  if (!host_copy_) host_copy_ = std::make_shared<std::map<std::string, core::TensorMap>>();
  for (auto& [name, tensors] : contents) {
    copy_to_host(tensors, (*host_copy_)[name]);
    const bool first = files.empty();
    files.push_back({name, [copy = host_copy_, name = name, first, d = debug_](const std::string& p) {
                       if (first && d.ckpt_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(d.ckpt_delay_ms));
                       if (d.ckpt_fail) throw std::runtime_error(str("cannot write ", p, " (LF_DEBUG_CKPT_FAIL)"));
                       core::save_safetensors(p, copy->at(name));
                     }});
  }
  session_.save_checkpoint_async(step_, state, std::move(files), bytes);
  LOG(INFO) << "checkpoint of step " << step_ << ": training blocked for " << int(since(t0) * 1000) << " ms ("
            << int(waited * 1000) << " ms waiting for the previous one), the rest is written in the background";
}

void TrainingLoop::save_sharded(nlohmann::json state, uint64_t bytes) {
  // Each rank writes its segments of every part; rank 0 also the whole tensors every rank holds
  // alike (buffers, the step counters). Every file carries the full shapes of the tensors whose
  // segments it may hold (checkpoint_tensors.h).
  struct Part {
    std::string stem;
    core::TensorMap tensors;
    core::TensorMetadata metadata;
  };
  const bool root = rt_.is_root();
  auto add_shapes = [](const ParamGroup& g, const std::string& prefix, Part& part) {
    for (const auto& [name, p] : g.named) part.metadata[segment_shape_key(prefix + name)] = shape_text(p.sizes());
  };
  std::vector<Part> parts;
  for (auto& g : groups_) {
    Part w{weights_stem(g.module.name), {}, {}}, o{optimizer_stem(g.module.name), {}, {}};
    for (const auto& [key, t] : g.params.owned) w.tensors[key] = t;
    if (root)
      for (const auto& b : g.module.module->named_buffers()) w.tensors[b.key()] = b.value();
    add_shapes(g.params, "", w);
    for (const auto& [key, t] : g.params.optimizer->state())
      if (root || key != "step") o.tensors[key] = t;
    add_shapes(g.params, "exp_avg.", o);
    add_shapes(g.params, "exp_avg_sq.", o);
    parts.push_back(std::move(w));
    parts.push_back(std::move(o));
  }
  Part e{"ema", {}, {}};
  for (const auto& [key, t] : ema_->state())
    if (root || key != core::EMA::kNumUpdatesKey) e.tensors[key] = t;
  add_shapes(groups_.front().params, "", e);
  parts.push_back(std::move(e));

  const int rank = rt_.rank(), world = static_cast<int>(rt_.world());
  nlohmann::json shards = nlohmann::json::object();
  std::vector<CheckpointFile> files;
  for (const Part& part : parts) {
    for (int r = 0; r < world; ++r) shards[part.stem].push_back(shard_file(part.stem, r, world));
    files.push_back({shard_file(part.stem, rank, world),
                     [&part](const std::string& p) { core::save_safetensors(p, part.tensors, part.metadata); }});
  }
  session_.save_checkpoint_sharded(step_, std::move(state), files, shards, bytes);
}

}  // namespace lf::launch
