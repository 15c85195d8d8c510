// scratch: architecture timing (not committed)
#include <chrono>
#include <cstdio>
#include "core/unet.h"
#include "core/vae.h"
#include "core/state_dict.h"
using namespace lf::core;
double ms_since(std::chrono::steady_clock::time_point a){return std::chrono::duration<double,std::milli>(std::chrono::steady_clock::now()-a).count();}
void vae_case(const char* name, std::vector<int64_t> ch, int64_t lpb, bool attn, int64_t groups, int64_t batch, int it) {
  VAEOptions o; o.block_out_channels = ch; o.layers_per_block = lpb; o.mid_block_add_attention = attn; o.norm_num_groups = groups;
  VAE v(o);
  at::Tensor x = torch::rand({batch,1,32,32})*2-1;
  auto step=[&]{ auto post=v->encode(x); auto rec=v->decode(post.sample(torch::randn_like(post.mean()))); for (auto&p: v->parameters()) p.mutable_grad()=at::Tensor(); vae_loss(x,rec,post,ReconLoss::kL1,1e-6).total.backward();};
  step(); auto a=std::chrono::steady_clock::now(); for(int i=0;i<it;++i) step(); double t=ms_since(a)/it;
  torch::NoGradGuard g; auto b=std::chrono::steady_clock::now(); for(int i=0;i<it;++i) v->encode(x); double te=ms_since(b)/it;
  std::printf("VAE %-28s %8lld params  train %7.1f ms/step (%6.0f img/s)  encode %6.0f img/s\n", name, (long long)count_parameters(*v), t, batch*1000/t, batch*1000/te);
}
void unet_case(const char* name, int64_t mc, std::vector<int64_t> mult, int64_t nrb, std::vector<int64_t> ads, int64_t hc, int64_t batch, int it) {
  UNetOptions o; o.model_channels=mc; o.channel_mult=mult; o.num_res_blocks=nrb; o.attention_ds=ads; o.head_channels=hc; o.num_classes=10;
  UNet u(o);
  at::Tensor x=torch::randn({batch,4,8,8}); at::Tensor t=torch::randint(0,1000,{batch}); at::Tensor y=torch::randint(0,10,{batch});
  auto step=[&]{ for (auto&p: u->parameters()) p.mutable_grad()=at::Tensor(); u->forward(x,t,y).pow(2).mean().backward();};
  step(); auto a=std::chrono::steady_clock::now(); for(int i=0;i<it;++i) step(); double tt=ms_since(a)/it;
  torch::NoGradGuard g; at::Tensor xi=torch::randn({500,4,8,8}); at::Tensor ti=torch::randint(0,1000,{500}); at::Tensor yi=torch::randint(0,10,{500});
  u->forward(xi,ti,yi); auto b=std::chrono::steady_clock::now(); for(int i=0;i<3;++i) u->forward(xi,ti,yi); double tf=ms_since(b)/3;
  std::printf("UNet %-28s %8lld params  train %7.1f ms/step (%6.0f img/s)  fwd %6.0f img/s\n", name, (long long)count_parameters(*u), tt, batch*1000/tt, 500*1000/tf);
}
int main(int argc, char**argv){ torch::set_num_threads(argc>1?atoi(argv[1]):2); std::string what=argc>2?argv[2]:"all";
 if(what=="vae"||what=="all"){
  vae_case("32,32,32 attn", {32,32,32},1,true,32,64,3);
  vae_case("16,32,64 attn g16", {16,32,64},1,true,16,64,3);
  vae_case("16,32,32 noattn g16", {16,32,32},1,false,16,64,3);
  vae_case("32,64,64 attn", {32,64,64},1,true,32,64,3);
  vae_case("8,16,32 noattn g8", {8,16,32},1,false,8,64,3);
 }
 if(what=="unet"||what=="all"){
  unet_case("64 (1,2,2) nrb2 ds2,4", 64,{1,2,2},2,{2,4},32,128,3);
  unet_case("64 (1,2) nrb2 ds2", 64,{1,2},2,{2},32,128,3);
  unet_case("96 (1,2) nrb2 ds2", 96,{1,2},2,{2},32,128,3);
  unet_case("64 (1,2,2) nrb1 ds2,4", 64,{1,2,2},1,{2,4},32,128,3);
  unet_case("48 (1,2,2) nrb2 ds2,4", 48,{1,2,2},2,{2,4},48,128,3);
  unet_case("128 (1,2) nrb1 ds2", 128,{1,2},1,{2},64,128,3);
 }
}
