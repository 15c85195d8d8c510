// `latentforge train`: starts the runtime, prints the resolved config (rank 0), runs the latent
// diffusion trainer.
#include <glog/logging.h>

#include "launch/ldm_trainer.h"
#include "launch/runtime.h"
#include "launch/subcommands.h"

namespace lf::launch {

int run_train(const Invocation& inv) {
  Runtime rt(inv.config.train().device, inv.config.dist());
  if (rt.is_root()) LOG(INFO) << "resolved config:\n" << inv.config.to_ini();
  return train_ldm(inv.config, rt, TrainFlags{inv.args.flag("resume"), inv.args.has("break-lock")});
}

}  // namespace lf::launch
