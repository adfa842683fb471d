/* dagd entry point: hands argv to the CLI. */
#include "dagd/cli.h"

int main(int argc, char **argv) { return dg_cli_main(argc, argv); }
