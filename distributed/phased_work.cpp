// PhasedWork and Lane: multi-phase collectives issued in a fixed order per lane (see
// phased_work.h).
#include "distributed/phased_work.h"

#include <algorithm>
#include <stdexcept>

#include "core/util/strings.h"

namespace lf::dist {

Lane::Lane(std::unique_ptr<Communicator> comm, std::string name) : comm_(std::move(comm)), name_(std::move(name)) {}

void Lane::issued(int64_t operation) {
  if (!is_turn_of(operation))
    throw std::logic_error(lf::str("lane ", name_, ": operation ", operation, " issued out of turn"));
  queue_.pop_front();
}

void Pipeline::progress() {
  // By index: an operation's advance never creates or destroys operations.
  for (size_t i = 0; i < live_.size(); ++i) live_[i]->advance();
}

PhasedWork::PhasedWork(std::string what, const Communicator& tag_of, std::shared_ptr<Pipeline> pipeline,
                       std::vector<Phase> phases)
    : Work(std::move(what), tag_of.tag(), tag_of.timeout(), tag_of.poll_policy()),
      pipeline_(std::move(pipeline)),
      sequence_(pipeline_->next_sequence()),
      phases_(std::move(phases)) {
  for (const Phase& p : phases_)
    if (p.lane != nullptr) p.lane->enqueue(sequence_);
  pipeline_->live_.push_back(this);
  try {
    advance();
  } catch (...) {
    pipeline_->live_.pop_back();
    throw;
  }
}

PhasedWork::~PhasedWork() {
  auto& live = pipeline_->live_;
  live.erase(std::remove(live.begin(), live.end(), this), live.end());
}

bool PhasedWork::step() {
  while (current_ < phases_.size()) {
    Phase& phase = phases_[current_];
    if (phase.lane != nullptr) {
      if (!work_) {
        waiting_turn_ = !phase.lane->is_turn_of(sequence_);
        if (waiting_turn_) return false;
        work_ = phase.issue(phase.lane->comm(), lf::str(what(), ": ", phase.name));
        phase.lane->issued(sequence_);
      }
      if (!work_->test()) return false;
      work_.reset();
    }
    if (phase.after) phase.after();
    ++current_;
  }
  return true;
}

void PhasedWork::advance() {
  if (done_) return;
  try {
    done_ = step();
  } catch (const JobAborted&) {
    throw;
  } catch (const std::exception& e) {
    throw std::runtime_error(lf::str(tag(), " ", what(), ", ", state(), ": ", e.what()));
  }
}

bool PhasedWork::test() {
  pipeline_->progress();
  return done_;
}

std::string PhasedWork::state() const {
  if (done_ || current_ >= phases_.size()) return "done";
  const Phase& phase = phases_[current_];
  return lf::str("at phase ", current_ + 1, "/", phases_.size(), ", ", phase.name,
                 waiting_turn_ ? ", waiting for its turn" : "");
}

}  // namespace lf::dist
