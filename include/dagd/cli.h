/* cli — argument parsing and the verbs of docs/cli.md. `run`, `validate`, `test` run
 * in-process; returns the process exit status (0 ok, 1 failed, 2 usage/input error). */
#pragma once

int dg_cli_main(int argc, char **argv);

/* `dagd next` (argv[0] = "next"): the next scheduled runs of one DAG, offline. */
int dg__cli_next(int argc, char **argv);

/* The client verbs (dags, runs, tasks, logs, trigger, pause, unpause, cancel, clear, mark,
 * backfill): argv[0] is the verb. Returns the exit status (0 ok, 1 a waited-for run
 * failed, 2 usage/input error, 3 server unreachable or answered an error), or -1 when
 * argv[0] is not a client verb. */
int dg__cli_client(int argc, char **argv);
