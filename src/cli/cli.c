/* cli — the command line (SPEC §6). `run`, `validate` and `test` work in-process on a
 * libuv loop of their own; they return the process exit status. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_internal.h"
#include "dagd/cli.h"
#include "dagd/config.h"
#include "dagd/log.h"
#include "dagd/server.h"
#include "dagd/docker.h"
#include "dagd/store.h"
#include "dagd/tmpl.h"

#define EXIT_USAGE 2
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
    "  dags | runs DAG | tasks DAG RUN | logs DAG RUN TASK [--try N] [-f]\n"
    "  trigger DAG [--conf JSON] [--date D] [--wait]\n"
    "  pause DAG | unpause DAG | cancel DAG RUN\n"
    "  clear DAG RUN [TASK...] [--downstream] [--failed]\n"
    "  mark DAG RUN TASK success|failed | backfill DAG --from D --to D\n"
    "\n"
    "  help                   this text\n"
    "  version                the version\n"
    "\n"
    "Docker is reached through DOCKER_HOST (default unix:///var/run/docker.sock).\n";

/* ---- argument parsing: options may come anywhere, as --opt VALUE or --opt=VALUE ---- */

typedef struct args {
    char **pos;
    size_t n_pos;
    const char *date, *conf, *state, *dags, *config, *listen, *log;
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
                fprintf(stderr, "dagd: option --%s needs a value\n", opts[k].name);
                return -EINVAL;
            }
            *(const char **)((char *)a + opts[k].off) = val;
            found = true;
        }
        if (!found) {
            fprintf(stderr, "dagd: unknown option %s\n", s);
            return -EINVAL;
        }
    }
    return 0;
}

/* ---- loading ---- */

static void check_tmpl(dg_diags *d, const dg_dag *dag, const dg_task *t, const char *field, const char *src) {
    if (!src) return;
    dg_error err = {0};
    if (dg_tmpl_check(src, &err) < 0) {
        dg_diags_add(d, dag->file, t ? t->line : 1, t ? t->col : 1, "%s%s%s%s: %s", t ? "task '" : "",
                     t ? t->id : "", t ? "' " : "", field, err.msg ? err.msg : "bad template");
    }
    dg_error_clear(&err);
}

static void check_tmpl_v(dg_diags *d, const dg_dag *dag, const dg_task *t, const char *field, char **v) {
    for (size_t i = 0; v && v[i]; i++) check_tmpl(d, dag, t, field, v[i]);
}

/* Template syntax is checked up front so a typo fails validation, not a task at 3 a.m. */
static void check_templates(dg_diags *d, const dg_dag *dag) {
    for (size_t i = 0; i < dag->n_tasks; i++) {
        const dg_task *t = &dag->tasks[i];
        check_tmpl(d, dag, t, "image", t->image);
        check_tmpl_v(d, dag, t, "command", t->command);
        check_tmpl_v(d, dag, t, "entrypoint", t->entrypoint);
        check_tmpl_v(d, dag, t, "volumes", t->volumes);
        check_tmpl(d, dag, t, "working_dir", t->working_dir);
        for (size_t k = 0; k < t->n_env; k++) check_tmpl(d, dag, t, "env", t->env[k].value);
        check_tmpl(d, dag, t, "sensor.file", t->sensor.file);
    }
    for (size_t i = 0; i < dag->n_notifications; i++) {
        const dg_notification *n = &dag->notifications[i];
        check_tmpl(d, dag, NULL, "notification subject", n->email_subject);
        check_tmpl(d, dag, NULL, "notification body", n->email_body);
        check_tmpl(d, dag, NULL, "notification url", n->webhook_url);
        check_tmpl(d, dag, NULL, "notification body", n->webhook_body);
    }
}

int dg__cli_load(const char *path, dg_dag **ret) {
    dg_diags d = {0};
    dg_dag *dag = NULL;
    int r = dg_dag_load(path, NULL, &dag, &d);
    if (r >= 0) {
        check_templates(&d, dag);
        if (d.n) {
            dg_dag_free(dag);
            r = -EINVAL;
        }
    }
    if (r < 0) {
        dg_diags_print(&d, stderr);
        if (!d.n) fprintf(stderr, "%s: error: %s\n", path, strerror(-r));
        dg_diags_free(&d);
        return r;
    }
    dg_diags_free(&d);
    *ret = dag;
    return 0;
}

static bool is_yaml_name(const char *n) {
    size_t l = strlen(n);
    return n[0] != '.' && ((l > 4 && strcmp(n + l - 4, ".yml") == 0) || (l > 5 && strcmp(n + l - 5, ".yaml") == 0));
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Every *.yml / *.yaml directly in dir, sorted. */
static int list_yaml(const char *dir, char ***ret, size_t *ret_n) {
    DIR *dp = opendir(dir);
    if (!dp) return -errno;
    char **v = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        if (!is_yaml_name(e->d_name)) continue;
        v = xrealloc(v, (n + 2) * sizeof(char *));
        size_t dl = strlen(dir);
        while (dl > 1 && dir[dl - 1] == '/') dl--;
        v[n++] = xasprintf("%.*s/%s", (int)dl, dir, e->d_name);
        v[n] = NULL;
    }
    closedir(dp);
    if (n) qsort(v, n, sizeof(char *), cmp_str);
    *ret = v;
    *ret_n = n;
    return 0;
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* FILE, or a DAG id looked up in the DAGs folder. */
static int resolve_dag(const char *what, const char *dags_dir, dg_dag **ret) {
    struct stat st;
    if (strchr(what, '/') || is_yaml_name(what) || (stat(what, &st) == 0 && S_ISREG(st.st_mode))) {
        if (stat(what, &st) < 0) {
            fprintf(stderr, "dagd: %s: %s\n", what, strerror(errno));
            return -errno;
        }
        return dg__cli_load(what, ret);
    }
    const char *dir = dags_dir ? dags_dir : getenv("DAGD_DAGS_FOLDER");
    if (!dir || !*dir) dir = "dags";
    char **files = NULL;
    size_t n = 0;
    int r = list_yaml(dir, &files, &n);
    if (r < 0) {
        fprintf(stderr, "dagd: no file %s, and the DAGs folder %s cannot be read: %s\n", what, dir, strerror(-r));
        return r;
    }
    r = -ENOENT;
    for (size_t i = 0; i < n && r == -ENOENT; i++) {
        dg_diags d = {0};
        dg_dag *dag = NULL;
        if (dg_dag_load(files[i], NULL, &dag, &d) >= 0) {
            if (strcmp(dag->dag_id, what) == 0) {
                dg_dag_free(dag);
                r = dg__cli_load(files[i], ret);
            } else {
                dg_dag_free(dag);
            }
        }
        dg_diags_free(&d);
    }
    dg_strv_free(files);
    if (r == -ENOENT) fprintf(stderr, "dagd: no DAG '%s' in %s (and no such file)\n", what, dir);
    return r;
}

static char *default_state_dir(void) {
    const char *s = getenv("DAGD_STATE_DIR");
    return s && *s ? xstrdup(s) : dg_config_default_state_dir();
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
    dg_docker *docker;
    dg_sched *sched;
    dg_exec *exec;
    dg_store *store;
    const dg_dag *dag;
    dg_run *run;
    json_t *conf;
    char *run_id;
    int64_t logical_ms;
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
    dg_exec_free(f->exec);
    f->exec = NULL;
    dg_docker_free(f->docker);
    f->docker = NULL;
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
        f->connect_failed = true;
        maybe_finish(f);
        return;
    }
    f->run = dg_exec_add_run(f->exec, f->dag, f->run_id, "manual", f->logical_ms, f->logical_ms, f->logical_ms,
                             f->conf);
    dg_exec_persist_new_tis(f->exec, f->run);
    dg_exec_pump(f->exec);
}

static int foreground(const dg_dag *dag, const char *state_dir, json_t *conf, int64_t logical_ms, bool test_mode) {
    fg f = {0};
    dg_error err = {0};
    int rc = 1;
    /* the server's settings that apply to one run (SPEC §9): from DAGD_* alone */
    _cleanup_(dg_config_free) dg_config cfg = {0};
    if (dg_config_load(NULL, &cfg, &err) < 0) {
        fprintf(stderr, "dagd: %s\n", err.msg);
        dg_error_clear(&err);
        return EXIT_USAGE;
    }
    f.dag = dag;
    f.conf = conf;
    f.test_mode = test_mode;
    f.logical_ms = logical_ms;
    _cleanup_free_ char *now = dg_format_time(dg_now_ms(), true);
    f.run_id = xasprintf("%s__%s", test_mode ? "test" : "manual", now);
    uv_loop_init(&f.loop);
    if (state_dir && dg_store_open(state_dir, &f.store, &err) < 0) {
        fprintf(stderr, "dagd: state dir %s: %s\n", state_dir, err.msg);
        dg_error_clear(&err);
        uv_loop_close(&f.loop);
        free(f.run_id);
        return EXIT_USAGE;
    }
    if (dg_docker_new(&f.loop, cfg.docker_host, &f.docker, &err) < 0) {
        fprintf(stderr, "dagd: %s\n", err.msg);
        dg_error_clear(&err);
        dg_store_close(f.store);
        uv_loop_close(&f.loop);
        free(f.run_id);
        return EXIT_USAGE;
    }
    dg_sched_opts so = {.parallelism = cfg.parallelism, .pools = cfg.pools, .n_pools = cfg.n_pools};
    f.sched = dg_sched_new(&so);
    dg_exec_opts xo = {
        .loop = &f.loop,
        .docker = f.docker,
        .sched = f.sched,
        .store = f.store,
        .state_dir = state_dir,
        .allow_privileged = cfg.allow_privileged,
        .allow_docker_socket = cfg.allow_docker_socket,
        .allowed_volume_prefixes = cfg.allowed_volume_prefixes,
        .hooks = {.ti_changed = on_ti, .run_changed = on_run, .log_line = on_line, .idle = on_idle, .stalled = on_stalled, .ud = &f},
    };
    dg_exec_new(&xo, &f.exec, &err);
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
    if (f.interrupted) rc = EXIT_INTERRUPTED;
    if (!test_mode && f.run && f.store) {
        /* plain stdout stays one line per change; the pointer goes to stderr there */
        fprintf(f.disp.tty ? stdout : stderr, "\nrun %s %s. State: %s/dagd.db  Logs: %s/logs/%s/%s/\n", f.run_id,
                dg_run_state_name(f.run->state), state_dir, state_dir, dag->dag_id, f.run_id);
    }
    dg_sched_free(f.sched);
    dg_store_close(f.store);
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

/* What `run` and `test` both start from: the arguments checked, the DAG loaded. */
static int load_for_run(args *a, size_t n_pos, const char *usage, int64_t *ret_logical, json_t **ret_conf,
                        dg_dag **ret_dag) {
    if (a->n_pos != n_pos) {
        fputs(usage, stderr);
        return -EINVAL;
    }
    json_t *conf = NULL;
    if (parse_date(a->date, ret_logical) < 0 || dg__cli_parse_conf(a->conf, &conf) < 0) return -EINVAL;
    if (resolve_dag(a->pos[0], a->dags, ret_dag) < 0) {
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
    if (load_for_run(a, 1, "usage: dagd run FILE|DAG [--date D] [--conf JSON] [--state DIR]\n", &logical, &conf,
                     &dag) < 0)
        return EXIT_USAGE;
    _cleanup_free_ char *state = a->state ? xstrdup(a->state) : default_state_dir();
    int rc = foreground(dag, state, conf, logical, false);
    json_decref(conf);
    dg_dag_free(dag);
    return rc;
}

/* `dagd test`: the one task alone, as a DAG of one task with no retries. */
static int cmd_test(args *a) {
    int64_t logical;
    json_t *conf = NULL;
    dg_dag *dag = NULL;
    if (load_for_run(a, 2, "usage: dagd test FILE|DAG TASK [--date D] [--conf JSON]\n", &logical, &conf, &dag) < 0)
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
    int rc = foreground(&sub, NULL, conf, logical, true);
    json_decref(conf);
    dg_dag_free(dag);
    return rc;
}

static int validate_file(const char *path) {
    dg_dag *dag = NULL;
    if (dg__cli_load(path, &dag) < 0) return 1;
    printf("ok %s (%s, %zu task%s)\n", path, dag->dag_id, dag->n_tasks, dag->n_tasks == 1 ? "" : "s");
    dg_dag_free(dag);
    return 0;
}

static int cmd_validate(args *a) {
    if (a->n_pos == 0) {
        fputs("usage: dagd validate PATH...\n", stderr);
        return EXIT_USAGE;
    }
    int bad = 0;
    for (size_t i = 0; i < a->n_pos; i++) {
        const char *p = a->pos[i];
        if (is_dir(p)) {
            char **files = NULL;
            size_t n = 0;
            int r = list_yaml(p, &files, &n);
            if (r < 0) {
                fprintf(stderr, "%s: error: %s\n", p, strerror(-r));
                bad = 1;
                continue;
            }
            if (n == 0) fprintf(stderr, "%s: warning: no *.yml or *.yaml files\n", p);
            for (size_t k = 0; k < n; k++) bad |= validate_file(files[k]);
            dg_strv_free(files);
        } else {
            struct stat st;
            if (stat(p, &st) < 0) {
                fprintf(stderr, "%s: error: %s\n", p, strerror(errno));
                bad = 1;
                continue;
            }
            bad |= validate_file(p);
        }
    }
    fflush(stdout);
    return bad;
}

/* ---- the daemon ---- */

typedef struct serve_ctx {
    dg_server *server;
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
    dg_server_stop(c->server);
}

static int cmd_serve(args *a) {
    if (a->n_pos != 0) {
        fputs("usage: dagd serve [--config FILE] [--dags DIR] [--state DIR] [--listen ADDR] [--log auto|journald|stderr]\n",
              stderr);
        return EXIT_USAGE;
    }
    dg_config cfg;
    dg_error err = {0};
    if (serve_config(a, &cfg, &err) < 0) {
        fprintf(stderr, "dagd: %s\n", err.msg);
        dg_error_clear(&err);
        return EXIT_USAGE;
    }
    if (dg_log_setup(cfg.log) < 0) {
        fprintf(stderr, "dagd: --log must be auto, journald or stderr\n");
        dg_config_free(&cfg);
        return EXIT_USAGE;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    serve_ctx c = {.a = a};
    int rc = 0;
    if (dg_server_new(&loop, &cfg, &c.server, &err) < 0 || dg_server_start(c.server, &err) < 0) {
        dg_log(DG_LOG_ERR, NULL, "cannot start: %s", err.msg ? err.msg : "unknown error");
        dg_error_clear(&err);
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
    dg_config_free(&cfg);
    return rc;
}

int dg_cli_main(int argc, char **argv) {
    if (argc < 2) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        puts("dagd " DAGD_VERSION);
        return 0;
    }
    if (strcmp(cmd, "next") == 0) return dg__cli_next(argc - 1, argv + 1);
    static const struct { const char *name; int (*fn)(args *); } cmds[] = {
        {"run", cmd_run}, {"validate", cmd_validate}, {"test", cmd_test}, {"serve", cmd_serve}};
    signal(SIGPIPE, SIG_IGN);
    int crc = dg__cli_client(argc - 1, argv + 1);
    if (crc >= 0) return crc;
    for (size_t i = 0; i < ARRAY_SIZE(cmds); i++) {
        if (strcmp(cmd, cmds[i].name) != 0) continue;
        args a = {0};
        int rc = parse_args(argc - 2, argv + 2, &a) < 0 ? EXIT_USAGE : cmds[i].fn(&a);
        free(a.pos);
        return rc;
    }
    const char *names[] = {"run",     "validate", "test",   "serve", "next",  "help",     "version", "dags",
                           "runs",    "tasks",    "logs",   "trigger", "pause", "unpause", "cancel", "clear",
                           "mark",    "backfill"};
    const char *sug = dg_suggest(cmd, names, ARRAY_SIZE(names));
    fprintf(stderr, "dagd: unknown command '%s'%s%s%s\n\n%s", cmd, sug ? " (did you mean '" : "", sug ? sug : "",
            sug ? "'?)" : "", usage_text);
    return EXIT_USAGE;
}
