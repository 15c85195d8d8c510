// `latentforge vae train`: starts the runtime and runs the VAE trainer.
#include <glog/logging.h>

#include "launch/runtime.h"
#include "launch/subcommands.h"
#include "launch/vae_trainer.h"

namespace lf::launch {

int run_vae_train(const Invocation& inv) {
  Runtime rt(inv.config.vae_train.device, inv.config.dist);
  if (rt.is_root()) LOG(INFO) << "resolved config:\n" << inv.registry.to_ini({"data", "vae", "vae_train", "dist"});
  return train_vae(inv.config, inv.registry, rt, inv.args.flag("resume"));
}

}  // namespace lf::launch
