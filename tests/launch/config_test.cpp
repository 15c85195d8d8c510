// Config parsing and validation: INI + command-line overrides, and every error a user can
// hit names the key, the value, the origin and the allowed range or closest key.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "tests/test_util.h"
#include "launch/args.h"
#include "launch/config.h"
#include "launch/config_view.h"
#include "launch/threads.h"

namespace lf::launch {
namespace {

std::string tmp_file(const std::string& name, const std::string& content) {
  const char* base = std::getenv("LF_TEST_TMP");
  std::filesystem::path dir = base ? base : std::filesystem::temp_directory_path().string();
  std::filesystem::create_directories(dir);
  std::string path = (dir / name).string();
  std::ofstream(path) << content;
  return path;
}

struct Fixture {
  Config config;
  ConfigRegistry registry;
  Fixture() { register_config(config, registry); }
  ParsedArgs parse(std::vector<std::string> args) {
    return parse_command_line(args, {{"resume", true, "auto|PATH", ""}, {"finalize", false, "", ""}}, registry);
  }
};

template <class F>
std::string error_of(F f) {
  return lf::testing::error_of<UsageError>(f);
}

TEST(Config, FileThenCommandLineOverrides) {
  Fixture f;
  std::string ini = tmp_file("ok.ini", "[train]\nsteps = 500\nlr = 1e-3\n[cache]\ndir = /tmp/c\n");
  auto args = f.parse({"--config", ini, "--train.steps=700", "--resume", "auto", "--finalize", "pos1"});
  EXPECT_EQ(f.config.train.steps, 700);  // command line wins
  EXPECT_DOUBLE_EQ(f.config.train.lr, 1e-3);
  EXPECT_EQ(f.config.cache.dir, "/tmp/c");
  EXPECT_EQ(args.flag("resume"), "auto");
  EXPECT_TRUE(args.has("finalize"));
  ASSERT_EQ(args.positional.size(), 1u);
  EXPECT_EQ(args.positional[0], "pos1");
}

TEST(Config, EmptyValueOnCommandLineClearsTheKey) {
  Fixture f;
  std::string ini = tmp_file("val.ini", "[train]\nval_cache = runs/quick/cache/test\nsteps = 5\n");
  auto args = f.parse({"--config", ini, "--train.val_cache=", "--train.steps=6", "pos1"});
  EXPECT_EQ(f.config.ldm.val_cache, "");  // "--key=" clears what the INI set
  EXPECT_EQ(f.config.train.steps, 6);       // and the next option is still an option
  ASSERT_EQ(args.positional.size(), 1u);
  EXPECT_EQ(args.positional[0], "pos1");
  EXPECT_NE(error_of([&] { f.parse({"--train.steps="}); }).find("train.steps"), std::string::npos);
}

TEST(Config, UnknownKeyInFileNamesFileKeyAndClosest) {
  Fixture f;
  std::string ini = tmp_file("typo.ini", "[train]\nstepz = 5\n");
  std::string msg = error_of([&] { f.parse({"--config", ini}); });
  EXPECT_NE(msg.find("train.stepz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("typo.ini"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'train.steps'"), std::string::npos) << msg;
}

TEST(Config, UnknownKeyOnCommandLineSuggestsClosest) {
  Fixture f;
  std::string msg = error_of([&] { f.parse({"--train.batchsize=3"}); });
  EXPECT_NE(msg.find("train.batchsize"), std::string::npos) << msg;
  EXPECT_NE(msg.find("train.batch_size"), std::string::npos) << msg;
  msg = error_of([&] { f.parse({"--resum", "auto"}); });
  EXPECT_NE(msg.find("--resume"), std::string::npos) << msg;
}

TEST(Config, BadValuesNameKeyValueAndRange) {
  Fixture f;
  std::string msg = error_of([&] { f.parse({"--train.steps=abc"}); });
  EXPECT_NE(msg.find("train.steps = 'abc'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[1, "), std::string::npos) << msg;
  msg = error_of([&] { f.parse({"--train.steps=0"}); });
  EXPECT_NE(msg.find("out of range"), std::string::npos) << msg;
  msg = error_of([&] { f.parse({"--cache.dtype=f8"}); });
  EXPECT_NE(msg.find("expected one of f16, f32"), std::string::npos) << msg;
  msg = error_of([&] { f.parse({"--data.skip_bad=maybe"}); });
  EXPECT_NE(msg.find("expected true or false"), std::string::npos) << msg;
  msg = error_of([&] { f.parse({"--cache.scale_factor=-1"}); });
  EXPECT_NE(msg.find("auto or a positive number"), std::string::npos) << msg;
  std::string ini = tmp_file("badval.ini", "[train]\nlr = fast\n");
  msg = error_of([&] { f.parse({"--config", ini}); });
  EXPECT_NE(msg.find("train.lr = 'fast'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("badval.ini"), std::string::npos) << msg;
}

TEST(Config, MissingConfigFileIsNamed) {
  Fixture f;
  std::string msg = error_of([&] { f.parse({"--config", "/nonexistent/x.ini"}); });
  EXPECT_NE(msg.find("/nonexistent/x.ini"), std::string::npos) << msg;
}

TEST(Config, CrossKeyValidation) {
  Fixture f;
  f.parse({"--train.batch_size=10", "--train.grad_accum=3"});
  std::string msg = error_of([&] { validate_config(f.config); });
  EXPECT_NE(msg.find("train.batch_size = 10"), std::string::npos) << msg;
  EXPECT_NE(msg.find("train.grad_accum = 3"), std::string::npos) << msg;
}

TEST(Config, ResolvedIniRoundTrips) {
  Fixture a;
  a.parse({"--train.steps=123", "--sample.classes=1,2"});
  std::string ini = tmp_file("resolved.ini", a.registry.to_ini());
  Fixture b;
  b.parse({"--config", ini});
  EXPECT_EQ(a.registry.to_json(), b.registry.to_json());
}

TEST(ConfigView, ReadsOnlyWhatTheSubcommandDeclares) {
  Fixture f;
  f.parse({"--sample.num=7", "--train.run_dir=runs/x"});
  ConfigView v(f.config, f.registry, {"sample", "train.run_dir"}, "sample");
  EXPECT_EQ(v.sample().num, 7);
  EXPECT_EQ(v.value("train.run_dir"), "runs/x");
  std::string e = lf::testing::error_of<std::logic_error>([&] { v.train(); });
  EXPECT_NE(e.find("sample reads the config section [train] but does not declare it"), std::string::npos) << e;
  e = lf::testing::error_of<std::logic_error>([&] { v.value("vae.weights"); });
  EXPECT_NE(e.find("sample reads the config key vae.weights but does not declare it"), std::string::npos) << e;
  for (const auto& k : v.keys()) EXPECT_TRUE(k.rfind("sample.", 0) == 0 || k == "train.run_dir") << k;
  EXPECT_NE(v.to_ini().find("[train]\nrun_dir = runs/x\n"), std::string::npos) << v.to_ini();
  EXPECT_EQ(v.to_ini().find("steps"), v.to_ini().find("steps = 50"));  // sample.steps only, not train.steps
  EXPECT_THROW(ConfigView(f.config, f.registry, {"sampel"}, "x"), std::logic_error);
  EXPECT_THROW(ConfigView(f.config, f.registry, {"train.run_dri"}, "x"), std::logic_error);
}

TEST(Threads, FlagThenOmpNumThreadsThenCoresPerRank) {
  const std::string four = "4";
  EXPECT_EQ(choose_threads(&four, "3"), 4);             // --threads wins
  EXPECT_EQ(choose_threads(nullptr, "3"), 3);           // then OMP_NUM_THREADS
  EXPECT_EQ(choose_threads(nullptr, ""), default_threads());  // then cores / ranks here
  EXPECT_EQ(choose_threads(nullptr, nullptr), default_threads());
  const std::string zero = "0";
  EXPECT_NE(lf::testing::error_of([&] { choose_threads(&zero, nullptr); }).find("--threads = '0'"), std::string::npos);
  EXPECT_NE(lf::testing::error_of([&] { choose_threads(nullptr, "many"); }).find("OMP_NUM_THREADS = 'many'"),
            std::string::npos);
}

TEST(Threads, SetsTorchAndOpenBlasTogether) {
  set_threads(1);
  EXPECT_EQ(at::get_num_threads(), 1);
  int blas = openblas_threads();
  if (blas < 0) GTEST_SKIP() << "OpenBLAS is not the loaded BLAS";
  EXPECT_EQ(blas, 1);
  set_threads(2);
  EXPECT_EQ(at::get_num_threads(), 2);
  EXPECT_EQ(openblas_threads(), 2);
}

}  // namespace
}  // namespace lf::launch
