/* cli — the command line (docs/cli.md). `run`, `validate` and `test` work in-process on a
 * libuv loop of their own; they return the process exit status. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_internal.h"
#include "dagd/api.h"
#include "dagd/cli.h"
#include "dagd/config.h"
#include "dagd/cron.h"
#include "dagd/log.h"
#include "dagd/runtime.h"
#include "dagd/server.h"

#define EXIT_USAGE 2
#define EXIT_UNREACHABLE 3 /* the engine could not be reached (the client verbs use 3 for the server) */
#define EXIT_INTERRUPTED 130

static const char usage_text[] =
    "usage: dagd <command> [options]\n"
    "\n"
    "  run FILE|DAG [--date D] [--conf JSON] [--state DIR] [--dags DIR]\n"
    "                         one DAG run in the foreground; exit 0 success, 1 failed\n"
    "  validate PATH...       check DAG files (or folders of them); exit 0 valid, 1 invalid\n"
    "  test FILE|DAG TASK [--date D] [--conf JSON] [--dags DIR]\n"
    "                         run one task, ignoring dependencies, keeping no state\n"
    "  next FILE|DAG [--from TIME] [-n N] [--json]\n"
    "                         the next scheduled runs, offline\n"
    "  serve [--config FILE] [--dags DIR] [--state DIR] [--listen ADDR] [--log MODE]\n"
    "                         the daemon: schedules, REST API, crash recovery\n"
    "\n"
    "  client verbs (talk to `dagd serve`; --server URL, token from DAGD_TOKEN,\n"
    "  --token-file F or <state>/token; --json on listings):\n"
    "  health | dags | import-errors | runs DAG | tasks DAG RUN | logs DAG RUN TASK [--try N] [-f]\n"
    "  trigger DAG [--conf JSON] [--date D] [--wait]\n"
    "  pause DAG | unpause DAG | cancel DAG RUN\n"
    "  clear DAG RUN [TASK...] [--downstream] [--failed]\n"
    "  mark DAG RUN TASK success|failed | backfill DAG --from D --to D\n"
    "\n"
    "  help [COMMAND]         this text, or the usage of one command (as COMMAND --help)\n"
    "  version                the version\n"
    "\n"
    "Docker is reached through DOCKER_HOST (default unix:///var/run/docker.sock).\n";

static const char run_usage[] =
    "usage: dagd run FILE|DAG [--date D] [--conf JSON] [--state DIR] [--dags DIR] [--config FILE]\n"
    "  one DAG run in the foreground; exit 0 success, 1 failed, 2 bad input,\n"
    "  3 the Docker engine could not be reached, 130 interrupted\n";
static const char test_usage[] =
    "usage: dagd test FILE|DAG TASK [--date D] [--conf JSON] [--dags DIR] [--config FILE]\n"
    "  runs one task alone (no upstream tasks, no retries, no state); its output goes to stdout;\n"
    "  exit 0 success, 1 failed, 2 bad input, 3 the Docker engine could not be reached\n";
static const char validate_usage[] =
    "usage: dagd validate PATH... [--config FILE]\n"
    "  checks DAG files (or every *.yml / *.yaml of a folder); exit 0 all valid, 1 any invalid\n";
static const char serve_usage[] =
    "usage: dagd serve [--config FILE] [--dags DIR] [--state DIR] [--listen ADDR] [--log auto|journald|stderr]\n"
    "  the daemon; exit 0 after SIGTERM/SIGINT, 1 when it cannot start, 2 bad option or configuration\n";

/* ---- argument parsing: options may come anywhere, as --opt VALUE or --opt=VALUE ---- */

typedef struct args {
    char **pos;
    size_t n_pos;
    const char *date, *conf, *state, *dags, *config, *listen, *log;
    bool help;
    const char *usage; /* the verb's */
} args;

static int parse_args(int argc, char **argv, args *a) {
    a->pos = xcalloc((size_t)argc + 1, sizeof(char *));
    static const struct { const char *name; size_t off; } opts[] = {
        {"date", offsetof(args, date)},
        {"conf", offsetof(args, conf)},
        {"state", offsetof(args, state)},
        {"dags", offsetof(args, dags)},
        {"config", offsetof(args, config)},
        {"listen", offsetof(args, listen)},
        {"log", offsetof(args, log)},
    };
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "--") == 0) {
            while (++i < argc) a->pos[a->n_pos++] = argv[i];
            break;
        }
        if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
            a->help = true;
            continue;
        }
        if (!dg_str_has_prefix(s, "--") || strlen(s) == 2) {
            a->pos[a->n_pos++] = argv[i];
            continue;
        }
        const char *name = s + 2, *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        bool found = false;
        for (size_t k = 0; k < ARRAY_SIZE(opts); k++) {
            if (strlen(opts[k].name) != nl || strncmp(opts[k].name, name, nl) != 0) continue;
            const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (!val) {
                fprintf(stderr, "dagd: option --%s needs a value\n%s", opts[k].name, a->usage);
                return -EINVAL;
            }
            *(const char **)((char *)a + opts[k].off) = val;
            found = true;
        }
        if (!found) {
            fprintf(stderr, "dagd: unknown option %s\n%s", s, a->usage);
            return -EINVAL;
        }
    }
    return 0;
}

/* ---- loading ---- */

int dg__cli_config(const char *file, const char *dags, const char *state, dg_config *ret) {
    _cleanup_error_ dg_error err = {0};
    if (dg_config_load(file, ret, &err) < 0) {
        fprintf(stderr, "dagd: %s\n", err.msg);
        return -EINVAL;
    }
    if (dags) free(ret->dags_folder), ret->dags_folder = xstrdup(dags);
    if (state) free(ret->state_dir), ret->state_dir = xstrdup(state);
    return 0;
}

static int load_with(const dg_config *cfg, const char *what, const char *dags, dg_dag **ret) {
    _cleanup_diags_ dg_diags d = {0};
    _cleanup_error_ dg_error err = {0};
    int r = dg_dags_resolve(cfg, what, dags, ret, &d, &err);
    if (r < 0) {
        dg_diags_print(&d, stderr);
        if (err.msg) fprintf(stderr, "dagd: %s\n", err.msg);
        else if (!d.n) fprintf(stderr, "%s: error: %s\n", what, strerror(-r));
    }
    return r;
}

int dg__cli_load_dag(const char *what, const char *dags, const char *config_file, dg_dag **ret) {
    _cleanup_(dg_config_free) dg_config cfg = {0};
    if (dg__cli_config(config_file, NULL, NULL, &cfg) < 0) return -EINVAL;
    return load_with(&cfg, what, dags, ret);
}

int dg__cli_parse_conf(const char *text, json_t **ret) {
    if (!text) {
        *ret = NULL;
        return 0;
    }
    json_error_t je;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        fprintf(stderr, "dagd: --conf is not valid JSON: %s (column %d)\n", je.text, je.column);
        return -EINVAL;
    }
    if (!json_is_object(j)) {
        fprintf(stderr, "dagd: --conf must be a JSON object, like '{\"key\": \"value\"}'\n");
        json_decref(j);
        return -EINVAL;
    }
    *ret = j;
    return 0;
}

/* ---- one run in the foreground ---- */

typedef struct fg {
    uv_loop_t loop;
    dg_runtime *rt;
    dg_exec *exec;
    const dg_dag *dag;
    dg_run *run;
    json_t *conf;
    char *run_id;
    int64_t logical_ms;
    dg_interval interval; /* the data interval inferred from the schedule */
    dg_display disp;
    uv_signal_t sigint, sigterm;
    uv_timer_t redraw, finish;
    bool interrupted, finished, shutting_down, test_mode, connect_failed;
    int signals;
} fg;

static void fg_shutdown(fg *f) {
    if (f->shutting_down) return;
    f->shutting_down = true;
    if (f->disp.tty) dg__display_draw(&f->disp, f->run, f->exec, dg_now_ms());
    uv_close((uv_handle_t *)&f->sigint, NULL);
    uv_close((uv_handle_t *)&f->sigterm, NULL);
    uv_close((uv_handle_t *)&f->redraw, NULL);
    uv_close((uv_handle_t *)&f->finish, NULL);
    dg_runtime_close(f->rt);
    f->exec = NULL;
}

static void finish_cb(uv_timer_t *h) {
    fg *f = h->data;
    if (f->connect_failed || (f->finished && dg_exec_outstanding(f->exec) == 0)) fg_shutdown(f);
}

static void maybe_finish(fg *f) {
    if (!f->shutting_down) uv_timer_start(&f->finish, finish_cb, 0, 0);
}

static void on_ti(void *ud, dg_run *run, size_t task) {
    fg *f = ud;
    dg__display_ti(&f->disp, run, task);
}

static void on_run(void *ud, dg_run *run) {
    fg *f = ud;
    dg__display_run(&f->disp, run);
    if (run->state == DG_RUN_SUCCESS || run->state == DG_RUN_FAILED) {
        f->finished = true;
        maybe_finish(f);
    }
}

static void on_idle(void *ud) { maybe_finish(ud); }

/* In the foreground nothing else will ever change the previous run: say why and end. */
static void on_stalled(void *ud, dg_run *run) {
    fg *f = ud;
    for (size_t i = 0; i < run->dag->n_tasks; i++) {
        const dg_task *t = &run->dag->tasks[i];
        if (run->ti[i].state == DG_TI_NONE && t->depends_on_past && run->prev_states)
            fprintf(stderr, "dagd: task %s waits for its previous run (depends_on_past), where it ended %s\n", t->id,
                    dg_ti_state_name(run->prev_states[i]));
    }
    fprintf(stderr, "dagd: run %s cannot make progress; ending it\n", run->run_id);
    dg_exec_cancel_all(f->exec);
}

static void on_line(void *ud, dg_run *run, size_t task, int stream, const char *line, size_t len) {
    fg *f = ud;
    if (!f->test_mode) return;
    FILE *o = stdout;
    fwrite(line, 1, len, o);
    fputc('\n', o);
    fflush(o);
}

static void redraw_cb(uv_timer_t *h) {
    fg *f = h->data;
    dg__display_draw(&f->disp, f->run, f->exec, dg_now_ms());
}

static void signal_cb(uv_signal_t *h, int signum) {
    fg *f = h->data;
    f->interrupted = true;
    if (++f->signals > 1) {
        fprintf(stderr, "\ndagd: interrupted again: leaving without waiting for containers to stop\n");
        exit(EXIT_INTERRUPTED);
    }
    fprintf(stderr, "\ndagd: %s: stopping the run's containers (again to quit at once)\n",
            signum == SIGINT ? "interrupted" : "terminated");
    if (f->run) dg_exec_cancel_all(f->exec);
    else f->connect_failed = true, maybe_finish(f);
}

static void connected_cb(void *ud, const dg_error *err) {
    fg *f = ud;
    if (err) {
        fprintf(stderr, "dagd: %s\n", err->msg ? err->msg : "cannot reach the Docker engine");
        if (err->code != -ENOTSUP)
            fprintf(stderr, "dagd: hint: is the Docker engine running there? Point to it with DOCKER_HOST.\n");
        f->connect_failed = true;
        maybe_finish(f);
        return;
    }
    f->run = dg_exec_add_run(f->exec, f->dag, f->run_id, "manual", f->logical_ms, f->interval.start_ms,
                             f->interval.end_ms, f->conf);
    dg_exec_persist_new_tis(f->exec, f->run);
    dg_exec_pump(f->exec);
}

/* One run of dag on a runtime of its own; test_mode keeps no state. */
static int foreground(const dg_config *cfg, const dg_dag *dag, json_t *conf, int64_t logical_ms, bool test_mode) {
    fg f = {0};
    dg_error err = {0};
    int rc = 1;
    f.dag = dag;
    f.conf = conf;
    f.test_mode = test_mode;
    f.logical_ms = logical_ms;
    /* a run made by hand covers the interval Airflow would give it (docs/dags.md) */
    dg_schedule sch;
    bool has_sch = dag->schedule && dg_schedule_init(&sch, dag->schedule, dag->timezone, NULL) == 0;
    dg_schedule_manual_interval(has_sch ? &sch : NULL, logical_ms, &f.interval);
    if (has_sch) dg_schedule_done(&sch);
    _cleanup_free_ char *now = dg_format_time(dg_now_ms(), true);
    f.run_id = xasprintf("%s__%s", test_mode ? "test" : "manual", now);
    uv_loop_init(&f.loop);
    dg_runtime_opts ro = {
        .keep_state = !test_mode,
        .hooks = {.ti_changed = on_ti, .run_changed = on_run, .log_line = on_line, .idle = on_idle,
                  .stalled = on_stalled, .ud = &f},
    };
    if (dg_runtime_new(&f.loop, cfg, &ro, &f.rt, &err) < 0) {
        fprintf(stderr, "dagd: %s\n", err.msg);
        dg_error_clear(&err);
        uv_run(&f.loop, UV_RUN_DEFAULT);
        uv_loop_close(&f.loop);
        free(f.run_id);
        return EXIT_USAGE;
    }
    f.exec = f.rt->exec;
    dg__display_init(&f.disp, test_mode ? stderr : stdout, !test_mode && isatty(STDOUT_FILENO));
    uv_signal_init(&f.loop, &f.sigint);
    uv_signal_init(&f.loop, &f.sigterm);
    f.sigint.data = f.sigterm.data = &f;
    uv_signal_start(&f.sigint, signal_cb, SIGINT);
    uv_signal_start(&f.sigterm, signal_cb, SIGTERM);
    uv_timer_init(&f.loop, &f.redraw);
    uv_timer_init(&f.loop, &f.finish);
    f.redraw.data = f.finish.data = &f;
    if (f.disp.tty) uv_timer_start(&f.redraw, redraw_cb, 100, 200);
    dg_exec_connect(f.exec, connected_cb, &f);
    uv_run(&f.loop, UV_RUN_DEFAULT);

    if (f.run && f.finished) rc = f.run->state == DG_RUN_SUCCESS ? 0 : 1;
    else if (f.connect_failed) rc = EXIT_UNREACHABLE;
    if (f.interrupted) rc = EXIT_INTERRUPTED;
    if (!test_mode && f.run) {
        /* plain stdout stays one line per change; the pointer goes to stderr there */
        const char *sd = cfg->state_dir;
        fprintf(f.disp.tty ? stdout : stderr, "\nrun %s %s. State: %s/dagd.db  Logs: %s/logs/%s/%s/\n", f.run_id,
                dg_run_state_name(f.run->state), sd, sd, dag->dag_id, f.run_id);
    }
    dg_runtime_free(f.rt);
    dg__display_free(&f.disp);
    if (uv_loop_close(&f.loop) != 0) {
        uv_run(&f.loop, UV_RUN_DEFAULT);
        uv_loop_close(&f.loop);
    }
    free(f.run_id);
    return rc;
}

static int parse_date(const char *s, int64_t *ret) {
    if (!s) {
        *ret = dg_now_ms();
        return 0;
    }
    if (dg_parse_time(s, ret) < 0) {
        fprintf(stderr, "dagd: --date %s: expected a date (2025-01-31) or RFC 3339 time\n", s);
        return -EINVAL;
    }
    return 0;
}

/* What `run` and `test` both start from: the arguments checked, the configuration and
 * the DAG loaded. */
static int load_for_run(args *a, size_t n_pos, dg_config *cfg, int64_t *ret_logical, json_t **ret_conf,
                        dg_dag **ret_dag) {
    if (a->n_pos != n_pos) {
        fputs(a->usage, stderr);
        return -EINVAL;
    }
    json_t *conf = NULL;
    if (parse_date(a->date, ret_logical) < 0 || dg__cli_parse_conf(a->conf, &conf) < 0) return -EINVAL;
    if (dg__cli_config(a->config, a->dags, a->state, cfg) < 0 || load_with(cfg, a->pos[0], NULL, ret_dag) < 0) {
        json_decref(conf);
        return -EINVAL;
    }
    *ret_conf = conf;
    return 0;
}

static int cmd_run(args *a) {
    int64_t logical;
    json_t *conf = NULL;
    dg_dag *dag = NULL;
    _cleanup_(dg_config_free) dg_config cfg = {0};
    if (load_for_run(a, 1, &cfg, &logical, &conf, &dag) < 0)
        return EXIT_USAGE;
    int rc = foreground(&cfg, dag, conf, logical, false);
    json_decref(conf);
    dg_dag_free(dag);
    return rc;
}

/* `dagd test`: the one task alone, as a DAG of one task with no retries. */
static int cmd_test(args *a) {
    int64_t logical;
    json_t *conf = NULL;
    dg_dag *dag = NULL;
    _cleanup_(dg_config_free) dg_config cfg = {0};
    if (load_for_run(a, 2, &cfg, &logical, &conf, &dag) < 0)
        return EXIT_USAGE;
    ssize_t idx = dg_dag_task_index(dag, a->pos[1]);
    if (idx < 0) {
        const char **names = xcalloc(dag->n_tasks + 1, sizeof(char *));
        for (size_t i = 0; i < dag->n_tasks; i++) names[i] = dag->tasks[i].id;
        const char *sug = dg_suggest(a->pos[1], names, dag->n_tasks);
        fprintf(stderr, "dagd: DAG '%s' has no task '%s'%s%s%s\n", dag->dag_id, a->pos[1],
                sug ? " (did you mean '" : "", sug ? sug : "", sug ? "'?)" : "");
        free(names);
        json_decref(conf);
        dg_dag_free(dag);
        return EXIT_USAGE;
    }
    dg_task one = dag->tasks[idx];
    one.n_upstream = one.n_downstream = 0;
    one.upstream = one.downstream = NULL;
    one.retries = 0;
    one.depends_on_past = false;
    one.on_failure = one.on_success = one.on_retry = NULL;
    size_t topo0 = 0;
    dg_dag sub = *dag;
    sub.tasks = &one;
    sub.n_tasks = 1;
    sub.topo = &topo0;
    sub.on_failure = sub.on_success = NULL;
    int rc = foreground(&cfg, &sub, conf, logical, true);
    json_decref(conf);
    dg_dag_free(dag);
    return rc;
}

static int validate_file(const dg_config *cfg, const char *path) {
    dg_dag *dag = NULL;
    _cleanup_diags_ dg_diags d = {0};
    if (dg_dags_load(cfg, path, &dag, &d) < 0) {
        dg_diags_print(&d, stderr);
        if (!d.n) fprintf(stderr, "%s: error: cannot load the file\n", path);
        return 1;
    }
    printf("ok %s (%s, %zu task%s)\n", path, dag->dag_id, dag->n_tasks, dag->n_tasks == 1 ? "" : "s");
    dg_dag_free(dag);
    return 0;
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int cmd_validate(args *a) {
    if (a->n_pos == 0) {
        fputs(a->usage, stderr);
        return EXIT_USAGE;
    }
    _cleanup_(dg_config_free) dg_config cfg = {0};
    if (dg__cli_config(a->config, NULL, NULL, &cfg) < 0) return EXIT_USAGE;
    int bad = 0;
    for (size_t i = 0; i < a->n_pos; i++) {
        const char *p = a->pos[i];
        if (is_dir(p)) {
            char **files = NULL;
            size_t n = 0;
            int r = dg_dags_scan(p, &files, &n);
            if (r < 0) {
                fprintf(stderr, "%s: error: %s\n", p, strerror(-r));
                bad = 1;
                continue;
            }
            if (n == 0) fprintf(stderr, "%s: warning: no *.yml or *.yaml files\n", p);
            for (size_t k = 0; k < n; k++) bad |= validate_file(&cfg, files[k]);
            dg_strv_free(files);
        } else {
            struct stat st;
            if (stat(p, &st) < 0) {
                fprintf(stderr, "%s: error: %s\n", p, strerror(errno));
                bad = 1;
                continue;
            }
            bad |= validate_file(&cfg, p);
        }
    }
    fflush(stdout);
    return bad;
}

/* ---- the daemon ---- */

typedef struct serve_ctx {
    dg_server *server;
    dg_api *api;
    args *a;
    uv_signal_t term, intr, hup;
} serve_ctx;

/* The configuration as `serve` sees it: file, environment, then the command line. */
static int serve_config(args *a, dg_config *cfg, dg_error *err) {
    int r = dg_config_load(a->config, cfg, err);
    if (r < 0) return r;
    if (a->dags) free(cfg->dags_folder), cfg->dags_folder = xstrdup(a->dags);
    if (a->state) free(cfg->state_dir), cfg->state_dir = xstrdup(a->state);
    if (a->listen) free(cfg->listen), cfg->listen = xstrdup(a->listen);
    if (a->log) free(cfg->log), cfg->log = xstrdup(a->log);
    return 0;
}

static void serve_signal_cb(uv_signal_t *h, int signum) {
    serve_ctx *c = h->data;
    if (signum == SIGHUP) {
        dg_config cfg;
        dg_error err = {0};
        if (serve_config(c->a, &cfg, &err) < 0) {
            dg_log(DG_LOG_ERR, NULL, "SIGHUP: configuration not reloaded: %s", err.msg);
            dg_error_clear(&err);
            dg_server_reload(c->server, NULL);
            return;
        }
        dg_log(DG_LOG_NOTICE, NULL, "SIGHUP: configuration and DAGs folder reloaded");
        dg_server_reload(c->server, &cfg);
        dg_config_free(&cfg);
        return;
    }
    dg_log(DG_LOG_NOTICE, NULL, "%s: shutting down", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    uv_close((uv_handle_t *)&c->term, NULL);
    uv_close((uv_handle_t *)&c->intr, NULL);
    uv_close((uv_handle_t *)&c->hup, NULL);
    dg_api_stop(c->api);
    c->api = NULL;
    dg_server_stop(c->server);
}

/* <state_dir>/api.port: the port the API listens on, for scripts and tests (a listen
 * address with port 0 picks a free one). Written whole or not at all. */
static int write_port_file(const char *state_dir, int port, dg_error *err) {
    _cleanup_free_ char *path = xasprintf("%s/api.port", state_dir);
    _cleanup_free_ char *tmp = xasprintf("%s/.api.port.tmp", state_dir);
    FILE *f = fopen(tmp, "we");
    if (!f) return dg_error_set(err, -errno, "%s: %s", tmp, strerror(errno));
    fprintf(f, "%d\n", port);
    if (fclose(f) != 0 || rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return dg_error_set(err, -e, "%s: %s", path, strerror(e));
    }
    return 0;
}

/* The daemon is the server (DAG bag, schedule clock, recovery) with the REST API on it. */
static int serve_start(serve_ctx *c, uv_loop_t *loop, const dg_config *cfg, dg_error *err) {
    int r = dg_server_new(loop, cfg, &c->server, err);
    if (r < 0) return r;
    _cleanup_free_ char *token = NULL;
    bool made;
    if ((r = dg_api_token(cfg, &token, &made, err)) < 0) return r;
    if (made) dg_log(DG_LOG_NOTICE, NULL, "API token written to %s/token", cfg->state_dir);
    if ((r = dg_api_start(loop, c->server, cfg, token, &c->api, err)) < 0) return r;
    dg_log(DG_LOG_INFO, NULL, "API listening on %s (port %d)", cfg->listen, dg_api_port(c->api));
    if ((r = write_port_file(cfg->state_dir, dg_api_port(c->api), err)) < 0) return r;
    return dg_server_start(c->server, err);
}

/* The API's connections, the engine's and the store's all take descriptors: the soft limit
 * goes up to the hard one, at most FD_LIMIT_WANTED (docs/operations.md, "Descriptors").
 * Where it cannot, the API fits its connection limit under what there is. */
#define FD_LIMIT_WANTED 65536

static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= FD_LIMIT_WANTED || rl.rlim_cur >= rl.rlim_max) return;
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max < FD_LIMIT_WANTED ? rl.rlim_max : FD_LIMIT_WANTED;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        dg_log(DG_LOG_DEBUG, NULL, "descriptor limit stays %llu: %s", (unsigned long long)was, strerror(errno));
}

static int cmd_serve(args *a) {
    if (a->n_pos != 0) {
        fputs(a->usage, stderr);
        return EXIT_USAGE;
    }
    _cleanup_(dg_config_free) dg_config cfg = {0};
    dg_error err = {0};
    if (serve_config(a, &cfg, &err) < 0) {
        fprintf(stderr, "dagd: %s\n", err.msg);
        dg_error_clear(&err);
        return EXIT_USAGE;
    }
    if (dg_log_setup(cfg.log) < 0) {
        fprintf(stderr, "dagd: --log must be auto, journald or stderr\n");
        return EXIT_USAGE;
    }
    if (dg_api_check_listen(cfg.listen, &err) < 0) {
        fprintf(stderr, "dagd: %s\n", err.msg);
        dg_error_clear(&err);
        return EXIT_USAGE;
    }
    raise_fd_limit();
    uv_loop_t loop;
    uv_loop_init(&loop);
    serve_ctx c = {.a = a};
    int rc = 0;
    if (serve_start(&c, &loop, &cfg, &err) < 0) {
        dg_log(DG_LOG_ERR, NULL, "cannot start: %s", err.msg ? err.msg : "unknown error");
        dg_error_clear(&err);
        dg_api_stop(c.api);
        c.api = NULL;
        if (c.server) dg_server_stop(c.server);
        rc = 1;
    } else {
        uv_signal_init(&loop, &c.term);
        uv_signal_init(&loop, &c.intr);
        uv_signal_init(&loop, &c.hup);
        c.term.data = c.intr.data = c.hup.data = &c;
        uv_signal_start(&c.term, serve_signal_cb, SIGTERM);
        uv_signal_start(&c.intr, serve_signal_cb, SIGINT);
        uv_signal_start(&c.hup, serve_signal_cb, SIGHUP);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    dg_server_free(c.server);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return rc;
}

static bool is_help(const char *s) { return strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0; }

int dg_cli_main(int argc, char **argv) {
    if (argc < 2) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "help") == 0 && argc == 3 && !is_help(argv[2])) {
        /* `dagd help VERB` is `dagd VERB --help` */
        char *again[] = {argv[0], argv[2], (char *)"--help", NULL};
        return dg_cli_main(3, again);
    }
    if (strcmp(cmd, "help") == 0 || is_help(cmd)) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        bool help = false;
        for (int i = 2; i < argc; i++) help |= is_help(argv[i]);
        if (help) fputs("usage: dagd version\n  prints dagd's version\n", stdout);
        else puts("dagd " DAGD_VERSION);
        return 0;
    }
    if (strcmp(cmd, "next") == 0) return dg__cli_next(argc - 1, argv + 1);
    static const struct {
        const char *name;
        int (*fn)(args *);
        const char *usage;
    } cmds[] = {
        {"run", cmd_run, run_usage},
        {"validate", cmd_validate, validate_usage},
        {"test", cmd_test, test_usage},
        {"serve", cmd_serve, serve_usage},
    };
    signal(SIGPIPE, SIG_IGN);
    int crc = dg__cli_client(argc - 1, argv + 1);
    if (crc >= 0) return crc;
    for (size_t i = 0; i < ARRAY_SIZE(cmds); i++) {
        if (strcmp(cmd, cmds[i].name) != 0) continue;
        args a = {.usage = cmds[i].usage};
        int rc;
        if (parse_args(argc - 2, argv + 2, &a) < 0) rc = EXIT_USAGE;
        else if (a.help) rc = (fputs(a.usage, stdout), 0);
        else rc = cmds[i].fn(&a);
        free(a.pos);
        return rc;
    }
    const char *names[] = {"run",     "validate", "test",    "serve",   "next",   "help",  "version",
                           "dags",    "runs",     "tasks",   "logs",    "trigger", "pause", "unpause",
                           "cancel",  "clear",    "mark",    "backfill", "import-errors", "health"};
    const char *sug = dg_suggest(cmd, names, ARRAY_SIZE(names));
    fprintf(stderr, "dagd: unknown command '%s'%s%s%s\n\n%s", cmd, sug ? " (did you mean '" : "", sug ? sug : "",
            sug ? "'?)" : "", usage_text);
    return EXIT_USAGE;
}
