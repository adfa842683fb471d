/* cli — argument parsing and the verbs of SPEC §6. `run`, `validate`, `test` run
 * in-process; returns the process exit status (0 ok, 1 failed, 2 usage/input error). */
#pragma once

int dg_cli_main(int argc, char **argv);

/* `dagd next` (argv[0] = "next"): the next scheduled runs of one DAG, offline. */
int dg__cli_next(int argc, char **argv);
