// latentforge: parses the subcommand, initialises, dispatches; the only catch-all (cli.cpp).
#include "launch/cli.h"

int main(int argc, char** argv) { return lf::launch::run_cli(argc, argv); }
