// The resumable layout of a sampling job (docs/cli.md, "sample: ranks, chunks and resume").
// Chunk k holds samples [k*C, min((k+1)*C, N)) whatever the number of ranks; each chunk is
// written as OUT/parts/chunk-NNNNN.h5 (a samples file under a temporary name, fsynced, then
// renamed) with the job's fingerprint and its first index as attributes. A re-run of the same
// job skips the chunks already there; rank 0 then merges the chunks in order into
// OUT/samples.h5, one chunk in memory at a time, and removes parts/.
//
// Which rank samples which chunk: every rank walks the chunks still to do in ascending order and
// takes each one it can claim (a file created with O_EXCL in parts/claims/, so exactly one rank
// gets it, also across hosts on a shared file system). A faster rank takes more chunks, and the
// ranks finish within about one chunk of each other. The images never depend on who samples
// what: sample i's noise, sampler noise and label are keyed by i (docs/design.md, invariant 2).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/samples_file.h"

namespace lf {
class Progress;
}

namespace lf::launch {

struct ChunkPlan {
  int64_t num = 0;         // samples in the job
  int64_t chunk_size = 1;  // samples per chunk (the last may hold fewer)
  int64_t num_chunks() const { return (num + chunk_size - 1) / chunk_size; }
  int64_t begin(int64_t k) const { return k * chunk_size; }
  int64_t count(int64_t k) const { return std::min(chunk_size, num - begin(k)); }
};

class SampleParts {
 public:
  // `out_dir` holds samples.h5 and parts/; `job` is a canonical description of everything
  // that decides the images (its SHA-256 marks every chunk of the job).
  SampleParts(std::string out_dir, ChunkPlan plan, std::string job);

  const ChunkPlan& plan() const { return plan_; }
  std::string dir() const;                      // OUT/parts
  std::string chunk_path(int64_t k) const;      // OUT/parts/chunk-NNNNN.h5
  std::string samples_path() const;             // OUT/samples.h5
  const std::string& job_hash() const { return job_hash_; }

  // Rank 0, before any rank samples: removes what a killed run left half-written (temporary
  // files, claims) and the parts of a different job (logged), writes parts/job.json, and returns
  // the chunks still to do in ascending order (every finished chunk of this job is kept).
  std::vector<int64_t> prepare();
  // Whether chunk k's file is there, complete, and of this job.
  bool is_done(int64_t k) const;
  // Whether chunk k's final file exists (a rename made it: complete), without reading it.
  bool exists(int64_t k) const;
  // Claims chunk k for the caller (`who` is recorded in the claim, e.g. "rank 1 on node02"):
  // true for exactly one caller per chunk and job (prepare() clears the claims of earlier runs).
  // Throws std::runtime_error naming the file when the claim cannot be created.
  bool claim(int64_t k, const std::string& who) const;

  // A writer for chunk k (commit with commit_chunk). The images of a chunk stream through it
  // batch by batch.
  std::unique_ptr<data::SamplesWriter> open_chunk(int64_t k, const std::vector<int64_t>& image_shape,
                                                  const std::vector<std::string>& label_names) const;
  // Makes chunk k durable under its final name. Crash point "samples.chunk_written" (data
  // fsynced, before the rename).
  void commit_chunk(data::SamplesWriter& writer) const;

  // Rank 0, after every chunk is done: OUT/samples.h5 from the chunks in order, then parts/ is
  // removed. Crash points "samples.merge" (merged file fsynced, before its rename) and
  // "samples.merged" (renamed, parts/ not yet removed). A re-run after either merges again.
  // `attributes`: extra string attributes of samples.h5 (a text model's "prompts").
  void merge(const std::vector<int64_t>& image_shape, const std::vector<std::string>& label_names,
             const std::map<std::string, std::string>& attributes,
             Progress* progress) const;

 private:
  std::string out_dir_;
  ChunkPlan plan_;
  std::string job_, job_hash_;
};

}  // namespace lf::launch
