// latentforge: main() only calls run_cli (cli.cpp); Job::run (job.cpp) is the one catch-all.
#include "launch/cli.h"

int main(int argc, char** argv) { return lf::launch::run_cli(argc, argv); }
