// `latentforge vae train`: starts the runtime, prints the resolved config (rank 0), runs the VAE
// trainer.
#include <glog/logging.h>

#include "launch/runtime.h"
#include "launch/subcommands.h"
#include "launch/vae_trainer.h"

namespace lf::launch {

int run_vae_train(const Invocation& inv) {
  Runtime rt(inv.config.vae_train().device, inv.config.dist(), "vae_train.device");
  if (rt.is_root()) LOG(INFO) << "resolved config:\n" << inv.config.to_ini();
  return train_vae(inv.config, rt, TrainFlags{inv.args.flag("resume"), inv.args.has("break-lock")});
}

}  // namespace lf::launch
