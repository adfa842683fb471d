/* Unit tests for dag: loading the reference example, defaults, every error class with its
 * line:col, cycles, suggestions, a corpus of broken files, hostile inputs. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "dagd/dag.h"

#define DATA "tests/data/dags"

static dg_dag *load_ok(const char *text, const dg_dag_opts *opts) {
    dg_diags d = {0};
    dg_dag *dag = NULL;
    int r = dg_dag_load_string("t.yml", text, strlen(text), opts, &dag, &d);
    if (r < 0) dg_diags_print(&d, stderr);
    cr_assert_eq(r, 0, "load failed");
    cr_assert_eq(d.n, 0);
    cr_assert_not_null(dag);
    dg_diags_free(&d);
    return dag;
}

/* Loads text that must fail; returns the diagnostics for further checks. */
static dg_diags load_bad(const char *text, const dg_dag_opts *opts) {
    dg_diags d = {0};
    dg_dag *dag = (dg_dag *)0x1;
    int r = dg_dag_load_string("t.yml", text, strlen(text), opts, &dag, &d);
    cr_assert_eq(r, -EINVAL);
    cr_assert_eq(dag, (dg_dag *)0x1, "*ret must be untouched on failure");
    cr_assert_gt(d.n, 0);
    return d;
}

static const dg_diag *find_diag(const dg_diags *d, const char *needle) {
    for (size_t i = 0; i < d->n; i++)
        if (strstr(d->v[i].msg, needle)) return &d->v[i];
    return NULL;
}

/* Asserts that text fails with a message containing needle at line:col. */
static void expect_error(const char *text, int line, int col, const char *needle) {
    dg_diags d = load_bad(text, NULL);
    const dg_diag *g = find_diag(&d, needle);
    if (!g) dg_diags_print(&d, stderr);
    cr_assert_not_null(g, "no error containing \"%s\"", needle);
    cr_assert_eq(g->line, line, "\"%s\": line %d, expected %d", g->msg, g->line, line);
    cr_assert_eq(g->col, col, "\"%s\": col %d, expected %d", g->msg, g->col, col);
    cr_assert_str_eq(g->file, "t.yml");
    dg_diags_free(&d);
}

static size_t task(const dg_dag *dag, const char *id) {
    ssize_t i = dg_dag_task_index(dag, id);
    cr_assert_geq(i, 0, "no task %s", id);
    return (size_t)i;
}

Test(dag, spec_example) {
    dg_diags d = {0};
    dg_dag *dag = NULL;
    int r = dg_dag_load(DATA "/valid/spec_example.yml", NULL, &dag, &d);
    dg_diags_print(&d, stderr);
    cr_assert_eq(r, 0);
    cr_assert_str_eq(dag->dag_id, "daily_sales_batch");
    cr_assert_str_eq(dag->description, "Daily best-seller ranking");
    cr_assert_str_eq(dag->schedule, "0 2 * * *");
    cr_assert_str_eq(dag->timezone, "Asia/Seoul");
    cr_assert(dag->has_start_date && dag->has_end_date);
    cr_assert_eq(dag->start_date_ms, 1735689600000LL);
    cr_assert_eq(dag->end_date_ms, 1767139200000LL);
    cr_assert_not(dag->catchup);
    cr_assert_eq(dag->max_active_runs, 1);
    cr_assert_eq(dag->max_active_tasks, 16);
    cr_assert_str_eq(dag->tags[0], "sales");
    cr_assert_null(dag->tags[1]);
    cr_assert_str_eq(json_string_value(json_object_get(dag->params, "region")), "kr");
    cr_assert_eq(dag->n_notifications, 2);
    const dg_notification *ops = dg_dag_notification(dag, "ops");
    cr_assert_not_null(ops);
    cr_assert_str_eq(ops->email_to[0], "manager@example.com");
    cr_assert_str_eq(ops->email_subject, "{{ dag_id }} {{ ds }} {{ state }}");
    cr_assert_str_eq(dg_dag_notification(dag, "chat")->webhook_url, "{{ conn.slack.uri }}");
    cr_assert_null(dg_dag_notification(dag, "nope"));
    cr_assert_str_eq(dag->on_failure[0], "ops");

    cr_assert_eq(dag->n_tasks, 3);
    const dg_task *w = &dag->tasks[task(dag, "wait_for_raw_data")];
    const dg_task *p = &dag->tasks[task(dag, "process_sales_data")];
    const dg_task *s = &dag->tasks[task(dag, "send_success_email")];
    cr_assert_eq(w->kind, DG_KIND_SENSOR);
    cr_assert_str_eq(w->sensor.file, "/data/raw/sales/{{ ds }}/*.parquet");
    cr_assert_eq(w->sensor.interval_ms, 60000);
    cr_assert_eq(w->sensor.timeout_ms, 3600000);
    cr_assert(w->sensor.reschedule);
    cr_assert_eq(w->line, 27);
    cr_assert_eq(w->col, 3);

    cr_assert_eq(p->kind, DG_KIND_CONTAINER);
    cr_assert_str_eq(p->image, "bitnami/spark:3.5");
    cr_assert_eq(dg_strv_len(p->command), 4);
    cr_assert_str_eq(p->command[3], "{{ ds }}");
    cr_assert_eq(p->n_env, 1);
    cr_assert_str_eq(p->env[0].key, "SPARK_DRIVER_MEMORY");
    cr_assert_str_eq(p->env[0].value, "4g");
    cr_assert_not(p->env[0].secret);
    cr_assert_str_eq(p->connections[0], "mart");
    cr_assert_str_eq(p->volumes[0], "/apps:/apps:ro");
    cr_assert_float_eq(p->cpus, 2.0, 1e-9);
    cr_assert_eq(p->memory, 4LL << 30);
    /* defaults reach every kind, network only the container task */
    cr_assert_eq(p->retries, 3);
    cr_assert_eq(w->retries, 3);
    cr_assert_eq(s->retries, 3);
    cr_assert_eq(p->retry_delay_ms, 300000);
    cr_assert(p->retry_exponential_backoff);
    cr_assert_eq(p->max_retry_delay_ms, 3600000);
    cr_assert_eq(p->timeout_ms, 7200000);
    cr_assert_str_eq(p->network, "pipeline");
    cr_assert_null(w->network);
    cr_assert_null(s->network);

    cr_assert_eq(s->kind, DG_KIND_NOTIFY);
    cr_assert_str_eq(s->notify, "ops");
    cr_assert_eq(p->n_upstream, 1);
    cr_assert_eq(p->upstream[0], task(dag, "wait_for_raw_data"));
    cr_assert_eq(w->n_downstream, 1);
    cr_assert_eq(w->downstream[0], task(dag, "process_sales_data"));
    cr_assert_eq(dag->topo[0], task(dag, "wait_for_raw_data"));
    cr_assert_eq(dag->topo[2], task(dag, "send_success_email"));
    cr_assert_eq(dg_task_effective_weight(dag, task(dag, "wait_for_raw_data")), 3);
    dg_dag_free(dag);
    dg_diags_free(&d);
}

Test(dag, connections_checked_when_asked) {
    const char *known[] = {"warehouse", "marts", NULL};
    dg_dag_opts opts = {.known_connections = known, .check_connections = true};
    dg_diags d = {0};
    dg_dag *dag = NULL;
    cr_assert_eq(dg_dag_load(DATA "/valid/spec_example.yml", &opts, &dag, &d), -EINVAL);
    cr_assert_null(dag);
    cr_assert_eq(d.n, 1);
    cr_assert_str_eq(d.v[0].msg, "unknown connection 'mart' (did you mean 'marts'?)");
    cr_assert_eq(d.v[0].line, 34);
    cr_assert_eq(d.v[0].col, 19);
    dg_diags_free(&d);

    const char *ok[] = {"mart", NULL};
    opts.known_connections = ok;
    cr_assert_eq(dg_dag_load(DATA "/valid/spec_example.yml", &opts, &dag, &d), 0);
    dg_dag_free(dag);

    opts.known_connections = NULL; /* checking with nothing known refuses every name */
    cr_assert_eq(dg_dag_load(DATA "/valid/spec_example.yml", &opts, &dag, &d), -EINVAL);
    cr_assert_not_null(find_diag(&d, "unknown connection 'mart'"));
    dg_diags_free(&d);
}

Test(dag, pools_checked_only_when_known) {
    const char *text = "dag: d\ntasks:\n  a: {image: x, pool: etl}\n";
    dg_dag *dag = load_ok(text, NULL);
    cr_assert_str_eq(dag->tasks[0].pool, "etl");
    dg_dag_free(dag);
    const char *pools[] = {"etl2", NULL};
    dg_dag_opts opts = {.known_pools = pools};
    dg_diags d = load_bad(text, &opts);
    cr_assert_str_eq(d.v[0].msg, "unknown pool 'etl' (did you mean 'etl2'? the pools are etl2)");
    cr_assert_eq(d.v[0].line, 3);
    cr_assert_eq(d.v[0].col, 23);
    dg_diags_free(&d);
}

Test(dag, builtin_defaults) {
    dg_dag *dag = load_ok("dag: d\ntasks:\n  a: {image: x}\n  s: {sensor: {file: /f}}\n"
                          "  n: {notify: o}\nnotifications: {o: {webhook: {url: u}}}\n",
                          NULL);
    cr_assert_str_eq(dag->timezone, "UTC");
    cr_assert_null(dag->schedule);
    cr_assert_not(dag->has_start_date);
    cr_assert_eq(dag->max_active_runs, 16);
    cr_assert_eq(dag->max_active_tasks, 16);
    cr_assert_not_null(dag->params);
    cr_assert_eq(json_object_size(dag->params), 0);
    const dg_task *a = &dag->tasks[0], *s = &dag->tasks[1];
    cr_assert_eq(a->retries, 0);
    cr_assert_eq(a->retry_delay_ms, 300000);
    cr_assert_eq(a->priority_weight, 1);
    cr_assert_eq(a->trigger_rule, DG_TR_ALL_SUCCESS);
    cr_assert_eq(a->pull, DG_PULL_MISSING);
    cr_assert_eq(a->remove, DG_REMOVE_ALWAYS);
    cr_assert_null(a->command);
    cr_assert_null(a->depends_on);
    cr_assert_eq(s->sensor.interval_ms, 60000);
    cr_assert_eq(s->sensor.timeout_ms, 7LL * 86400000);
    cr_assert_not(s->sensor.reschedule);
    dg_dag_free(dag);
}

Test(dag, task_overrides_defaults) {
    dg_dag *dag = load_ok("dag: d\n"
                          "defaults: {retries: 2, network: n1, trigger_rule: all_done, pull: never,"
                          " env: {A: '1'}, priority_weight: 3}\n"
                          "tasks:\n"
                          "  a: {image: x}\n"
                          "  b: {image: x, retries: 5, network: n2, env: {B: 2}}\n"
                          "  c: {sensor: {file: /x}}\n",
                          NULL);
    const dg_task *a = &dag->tasks[0], *b = &dag->tasks[1], *c = &dag->tasks[2];
    cr_assert_eq(a->retries, 2);
    cr_assert_str_eq(a->network, "n1");
    cr_assert_eq(a->trigger_rule, DG_TR_ALL_DONE);
    cr_assert_eq(a->pull, DG_PULL_NEVER);
    cr_assert_eq(a->n_env, 1);
    cr_assert_str_eq(a->env[0].key, "A");
    cr_assert_eq(b->retries, 5);
    cr_assert_str_eq(b->network, "n2");
    cr_assert_eq(b->n_env, 1, "a task's env replaces the defaults' env");
    cr_assert_str_eq(b->env[0].key, "B");
    cr_assert_str_eq(b->env[0].value, "2");
    cr_assert_eq(c->retries, 2);
    cr_assert_eq(c->trigger_rule, DG_TR_ALL_DONE);
    cr_assert_null(c->network);
    cr_assert_eq(c->n_env, 0);
    cr_assert_eq(c->priority_weight, 3);
    dg_dag_free(dag);
}

Test(dag, bad_default_reported_once_at_its_place) {
    dg_diags d = load_bad("dag: d\ndefaults: {retries: many}\ntasks:\n  a: {image: x}\n"
                          "  b: {image: x}\n  c: {notify: n}\n",
                          NULL);
    size_t n = 0;
    for (size_t i = 0; i < d.n; i++)
        if (strstr(d.v[i].msg, "'retries' must be an integer")) {
            n++;
            cr_assert_eq(d.v[i].line, 2);
            cr_assert_eq(d.v[i].col, 21);
        }
    cr_assert_eq(n, 1);
    dg_diags_free(&d);
    /* checked even when no task uses it */
    expect_error("dag: d\ndefaults: {network: [a]}\ntasks:\n  a: {sensor: {file: /x}}\n", 2, 21,
                 "'network' must be a string, not a list");
}

Test(dag, value_forms) {
    dg_dag *dag = load_ok(
        "dag: d\nparams: {i: 10, f: 0.5, t: true, n: null, q: \"10\", s: kr, l: [1, x]}\n"
        "tasks:\n"
        "  a:\n"
        "    image: x\n"
        "    command: sh -c 'echo \"a b\"'\n"
        "    entrypoint: [1, true, x]\n"
        "    env: {N: 1, B: false, S: {secret: pw}}\n"
        "    labels: [a=1, b=x=y]\n"
        "    skip_on_exit_code: [0, 255]\n"
        "  b:\n"
        "    image: x\n"
        "    depends_on: a\n"
        "    labels: {k: v}\n"
        "    skip_on_exit_code: 3\n",
        NULL);
    json_t *p = dag->params;
    cr_assert(json_is_integer(json_object_get(p, "i")));
    cr_assert_eq(json_integer_value(json_object_get(p, "i")), 10);
    cr_assert(json_is_real(json_object_get(p, "f")));
    cr_assert(json_is_true(json_object_get(p, "t")));
    cr_assert(json_is_null(json_object_get(p, "n")));
    cr_assert_str_eq(json_string_value(json_object_get(p, "q")), "10");
    cr_assert_str_eq(json_string_value(json_object_get(p, "s")), "kr");
    cr_assert_eq(json_array_size(json_object_get(p, "l")), 2);
    const dg_task *a = &dag->tasks[0], *b = &dag->tasks[1];
    cr_assert_eq(dg_strv_len(a->command), 3);
    cr_assert_str_eq(a->command[0], "sh");
    cr_assert_str_eq(a->command[2], "echo \"a b\"");
    cr_assert_str_eq(a->entrypoint[0], "1");
    cr_assert_str_eq(a->entrypoint[1], "true");
    cr_assert_eq(a->n_env, 3);
    cr_assert_str_eq(a->env[1].value, "false");
    cr_assert(a->env[2].secret);
    cr_assert_str_eq(a->env[2].value, "pw");
    cr_assert_eq(a->n_labels, 2);
    cr_assert_str_eq(a->labels[1].key, "b");
    cr_assert_str_eq(a->labels[1].value, "x=y");
    cr_assert_eq(a->n_skip_on_exit_code, 2);
    cr_assert_eq(a->skip_on_exit_code[1], 255);
    cr_assert_str_eq(b->depends_on[0], "a");
    cr_assert_str_eq(b->labels[0].value, "v");
    cr_assert_eq(b->n_skip_on_exit_code, 1);
    cr_assert_eq(b->skip_on_exit_code[0], 3);
    dg_dag_free(dag);
}

Test(dag, aliases_resolved) {
    dg_dag *dag = load_ok("dag: d\ntasks:\n  a: &t {image: x, retries: 2}\n  b: *t\n", NULL);
    cr_assert_eq(dag->n_tasks, 2);
    cr_assert_str_eq(dag->tasks[1].image, "x");
    cr_assert_eq(dag->tasks[1].retries, 2);
    cr_assert_eq(dag->tasks[1].line, 4);
    dg_dag_free(dag);
}

Test(dag, error_marks) {
    expect_error("dag: d\ntasks:\n  x:\n    imgae: alpine\n", 4, 5,
                 "unknown key 'imgae' in task 'x' (did you mean 'image'?)");
    expect_error("dag: d\ntasks:\n  x:\n    image: a\n    zzzzzzzz: 1\n", 5, 5,
                 "unknown key 'zzzzzzzz' in task 'x'");
    expect_error("dag: d\nschedulle: '@daily'\ntasks:\n  a: {image: x}\n", 2, 1,
                 "unknown key 'schedulle' (did you mean 'schedule'?)");
    expect_error("dag: d\ntasks:\n  a: {image: x}\n  b: {image: x, depends_on: [a, c]}\n", 4, 33,
                 "unknown task 'c' in depends_on (did you mean 'a'?)");
    expect_error("dag: d\ntasks:\n  a: {image: x}\n  a: {image: y}\n", 4, 3,
                 "duplicate task id 'a' (first defined at line 3)");
    expect_error("dag: d\ntasks:\n  a: {image: x, env: {A: 1, A: 2}}\n", 3, 29, "duplicate key 'A'");
    expect_error("dag: d\ntasks:\n  a: {retries: 1}\n", 3, 3, "task 'a' has no kind");
    expect_error("dag: d\ntasks:\n  a:\n", 3, 3, "task 'a' has no kind");
    expect_error("dag: d\ntasks:\n  a: {image: x, sensor: {file: /f}}\n", 3, 3,
                 "more than one kind (image and sensor)");
    expect_error("dag: d\nschedule: '*/61 * * * *'\nstart_date: 2025-01-01\ntasks:\n  a: {image: x}\n",
                 2, 11, "minute field: step 61 is out of range 1-60");
    expect_error("dag: d\ntasks:\n  a: {image: x, timeout: 10}\n", 3, 26, "bad duration '10' for 'timeout'");
    expect_error("dag: d\ntasks:\n  a: {image: x, shm_size: 1q}\n", 3, 27, "bad size '1q' for 'shm_size'");
    expect_error("dag: d\ntimezone: Europe/Pariss\ntasks:\n  a: {image: x}\n", 2, 11,
                 "unknown timezone 'Europe/Pariss'");
    expect_error("dag: d\ntimezone: zone.tab\ntasks:\n  a: {image: x}\n", 2, 11, "unknown timezone");
    expect_error("dag: d\nnotifications: {ops: {webhook: {url: u}}}\non_success: op\ntasks:\n  a: {image: x}\n",
                 3, 13, "unknown notification 'op' in 'on_success' (did you mean 'ops'?)");
    expect_error("dag: d\ntasks:\n  a: {image: x, on_retry: [x]}\n", 3, 28, "unknown notification 'x' in 'on_retry'");
    expect_error("dag: d\ntasks:\n  a: {notify: x}\n", 3, 15, "unknown notification 'x' in 'notify'");
    expect_error("dag: d\nschedule: '@daily'\ntasks:\n  a: {image: x}\n", 2, 11,
                 "a schedule needs a start_date");
    expect_error("dag: 'a b'\ntasks:\n  a: {image: x}\n", 1, 6, "bad dag id 'a b'");
    expect_error("dag: d\ntasks:\n  'a:b': {image: x}\n", 3, 3, "bad task id 'a:b'");
    expect_error("dag: d\ntasks:\n  a: {image: x, retries: 'x'}\n", 3, 26,
                 "'retries' must be an integer, not a string");
    expect_error("dag: d\ntasks:\n  a: {image: x, retries: -1}\n", 3, 26, "'retries' must be at least 0, got -1");
    expect_error("dag: d\ntasks:\n  a: {image: x, env: [A]}\n", 3, 22, "'env' must be a mapping");
    expect_error("dag: d\ntasks:\n  a: {image: x, resources: [1]}\n", 3, 28, "'resources' must be a mapping");
    expect_error("dag: d\ntasks:\n  a: {image: x, trigger_rule: all_don}\n", 3, 31,
                 "bad trigger_rule 'all_don' (did you mean 'all_done'?)");
    expect_error("dag: d\ntasks:\n  a: {image: x, pull: allways}\n", 3, 23, "bad pull 'allways' (did you mean 'always'?)");
    expect_error("dag: d\ntasks:\n  a: {image: x, remove: sometimes}\n", 3, 25,
                 "bad remove 'sometimes' (expected one of: always, on_success, never)");
    expect_error("dag: d\ntasks:\n  a: {image: x, skip_on_exit_code: [1, x]}\n", 3, 40,
                 "'skip_on_exit_code' must be an integer");
    expect_error("dag: d\ntasks:\n  a: {image: x, skip_on_exit_code: -1}\n", 3, 36,
                 "'skip_on_exit_code' must be at least 0");
    expect_error("dag: d\ntasks:\n  a: {image: x, output: {file: rel}}\n", 3, 32, "output file must be an absolute path");
    expect_error("dag: d\ntasks:\n  a: {image: x, output: /abs}\n", 3, 25, "'output' must be a mapping {file");
    expect_error("dag: d\ntasks:\n  a: {image: x, output: {path: /x}}\n", 3, 26, "unknown key 'path' in output");
    expect_error("dag: d\ntasks:\n  a: {image: x, volumes: ['/a:b']}\n", 3, 27, "bad volume '/a:b'");
    expect_error("dag: d\ntasks:\n  a: {image: x, volumes: [rel]}\n", 3, 27, "bad volume 'rel'");
    expect_error("dag: d\ntasks:\n  a: {image: x, volumes: '/a:/b'}\n", 3, 26, "'volumes' must be a list");
    expect_error("dag: d\ntasks:\n  a: {image: x, resources: {cpus: abc}}\n", 3, 35,
                 "'cpus' must be a number greater than 0");
    expect_error("dag: d\ntasks:\n  a: {image: x, resources: {cpu: 1}}\n", 3, 29,
                 "unknown key 'cpu' in resources (did you mean 'cpus'?)");
    expect_error("dag: d\ntasks:\n  a: {image: x, resources: {memory: 1z}}\n", 3, 37, "bad size '1z' for 'memory'");
    expect_error("dag: d\ntasks:\n  a: {image: x, command: \"a 'b\"}\n", 3, 26, "'command' has an unbalanced quote");
    expect_error("dag: d\ntasks:\n  a: {image: x, command: [a, [b]]}\n", 3, 30, "items of 'command' must be strings");
    expect_error("dag: d\ntasks:\n  a: {image: x, extra_hosts: ['db:nothing']}\n", 3, 31, "bad extra_hosts entry");
    expect_error("dag: d\ntasks:\n  a: {image: x, env: {A: {secret: 1, x: 2}}}\n", 3, 26,
                 "env 'A' must be a string or {secret: value}");
    expect_error("dag: d\ntasks:\n  a: {image: x, privileged: yes}\n", 3, 29, "'privileged' must be true or false");
    expect_error("dag: d\ndefaults: {netwrk: x}\ntasks:\n  a: {image: x}\n", 2, 12,
                 "unknown key 'netwrk' in defaults (did you mean 'network'?)");
    expect_error("dag: d\ndefaults: {depends_on: [a]}\ntasks:\n  a: {image: x}\n", 2, 12,
                 "'depends_on' cannot be set in defaults");
    expect_error("dag: d\ntasks:\n  a: {notify: n, image_x: 1}\nnotifications: {n: {webhook: {url: u}}}\n", 3, 18,
                 "unknown key 'image_x' in task 'a'");
    expect_error("dag: d\ntasks:\n  a: {notify: n, command: [x]}\nnotifications: {n: {webhook: {url: u}}}\n", 3, 18,
                 "key 'command' does not apply to notify task 'a'");
    expect_error("dag: d\ntasks:\n  a: {sensor: {file: /x, interval: 0s}}\n", 3, 36, "'interval' must be longer than 0");
    expect_error("dag: d\ntasks:\n  a: {sensor: {file: /x, tiemout: 1h}}\n", 3, 26,
                 "unknown key 'tiemout' in task 'a' (did you mean 'timeout'?)");
    expect_error("dag: d\nnotifications: {n: {email: {subject: s}}}\ntasks:\n  a: {notify: n}\n", 2, 28, "email needs 'to'");
    expect_error("dag: d\nnotifications: {n: {webhok: {url: u}}}\ntasks:\n  a: {notify: n}\n", 2, 21,
                 "unknown key 'webhok' in notification 'n' (did you mean 'webhook'?)");
    expect_error("dag: d\nparams: [1]\ntasks:\n  a: {image: x}\n", 2, 9, "'params' must be a mapping");
    expect_error("dag: d\ncatchup: 1\ntasks:\n  a: {image: x}\n", 2, 10, "'catchup' must be true or false");
    expect_error("dag: d\ntasks: [a]\n", 2, 8, "'tasks' must be a mapping");
    expect_error("dag: d\ntasks: {}\n", 2, 8, "'tasks' is empty");
    expect_error("dag: [d]\ntasks:\n  a: {image: x}\n", 1, 6, "'dag' must be a string, not a list");
    expect_error("dag: d\ntasks:\n  a: {image: x}\n  b: {image: x, depends_on: [a, a]}\n", 4, 33,
                 "task 'a' is listed twice in depends_on");
    expect_error("dag: d\ntasks:\n  a: {image: x}\n  {b: 1}: {image: x}\n", 4, 3, "mapping keys must be strings");
}

Test(dag, all_errors_collected_in_file_order) {
    dg_diags d = load_bad("dag: d\n"
                          "tasks:\n"
                          "  a: {image: x, retries: x}\n"
                          "  b: {image: x, imgae: y}\n"
                          "  c: {image: x, depends_on: [zz]}\n"
                          "timezone: Nowhere/Here\n",
                          NULL);
    cr_assert_eq(d.n, 4);
    cr_assert_eq(d.v[0].line, 3);
    cr_assert_eq(d.v[1].line, 4);
    cr_assert_eq(d.v[2].line, 5);
    cr_assert_eq(d.v[3].line, 6);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    dg_diags_print(&d, f);
    fclose(f);
    cr_assert(strstr(out, "t.yml:3:26: error: 'retries' must be an integer, not a string\n"));
    cr_assert(strstr(out, "t.yml:6:11: error: unknown timezone 'Nowhere/Here'"));
    free(out);
    dg_diags_free(&d);
}

/* A template error is reported with every other problem of the file, at the value that
 * holds it: a list item, an env value, a sensor's file, a notification field. */
Test(dag, template_errors_at_their_values) {
    dg_diags d = load_bad("dag: d\n"
                          "tasks:\n"
                          "  a:\n"
                          "    image: x\n"
                          "    retires: 2\n"
                          "    command: [echo, \"{{ ds \"]\n"
                          "    depends_on: [zz]\n"
                          "    env:\n"
                          "      OK: '{{ ds }}'\n"
                          "      BAD: {secret: '{{ ds | uper }}'}\n"
                          "  s:\n"
                          "    sensor: {file: '/data/{{ next_ds }}/*'}\n"
                          "  n: {notify: ops}\n"
                          "notifications:\n"
                          "  ops:\n"
                          "    webhook: {url: '{{ conn.x.uri', body: '{{ state }} {{ dag_id }}'}\n",
                          NULL);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    dg_diags_print(&d, f);
    fclose(f);
    cr_assert_str_eq(out, "t.yml:5:5: error: unknown key 'retires' in task 'a' (did you mean 'retries'?)\n"
                          "t.yml:6:21: error: command: unterminated '{{' at offset 0 in template '{{ ds '\n"
                          "t.yml:7:18: error: unknown task 'zz' in depends_on\n"
                          "t.yml:10:21: error: env 'BAD': unknown filter 'uper' (did you mean 'upper'?) at offset 8 in "
                          "template '{{ ds | uper }}'\n"
                          "t.yml:12:20: error: sensor file: 'next_ds' is not provided by dagd (Airflow 2 deprecated "
                          "it; use data_interval_end, or macros.ds_add(ds, 1) for the next day) in template "
                          "'{{ next_ds }}'\n"
                          "t.yml:16:20: error: webhook url: unterminated '{{' at offset 0 in template '{{ conn.x.uri'\n");
    free(out);
    dg_diags_free(&d);

    /* a template in defaults is reported once, where defaults has it */
    d = load_bad("dag: d\ndefaults: {working_dir: '/w/{{ tomorrow_ds }}'}\ntasks:\n  a: {image: x}\n  b: {image: x}\n",
                 NULL);
    cr_assert_eq(d.n, 1);
    cr_assert_eq(d.v[0].line, 2);
    cr_assert_eq(d.v[0].col, 25);
    cr_assert(strstr(d.v[0].msg, "working_dir: 'tomorrow_ds' is not provided by dagd"), "%s", d.v[0].msg);
    dg_diags_free(&d);

    expect_error("dag: d\ntasks:\n  a: {image: 'repo/{{ params.tag | lower }}', command: [echo, '{{ state }}']}\n",
                 3, 63, "command: 'state' is set only in notifications in template '{{ state }}'");
    expect_error("dag: d\ntasks:\n  a: {image: 'x:{% if y %}1{% endif %}'}\n", 3, 14,
                 "image: '{% ... %}' statements are not supported");
    expect_error("dag: d\ntasks:\n  a: {image: x, volumes: ['/d:/d', '/{{ ds:/e']}\n", 3, 36,
                 "volumes: unterminated '{{' at offset 1");
    /* a string command is split into words first: a {{ }} with spaces comes apart */
    expect_error("dag: d\ntasks:\n  a: {image: x, command: 'echo {{ ds }}'}\n", 3, 26,
                 "command: unterminated '{{' at offset 0 in template '{{' (a string 'command' is split into words "
                 "before rendering: write it as a list, or with no spaces inside {{ }})");
    dg_dag *dag = load_ok("dag: d\ntasks:\n  a: {image: x, command: 'echo {{ds}} {{ds_nodash}}'}\n", NULL);
    cr_assert_str_eq(dag->tasks[0].command[1], "{{ds}}");
    dg_dag_free(dag);
}

/* A problem in one part of a value does not hide the problems in the rest of it. */
Test(dag, nothing_stops_early) {
    dg_diags d = load_bad("dag: d\n"
                          "tasks:\n"
                          "  a:\n"
                          "    image: '{{ ds '\n"
                          "    sensor: {file: /x, interval: soon}\n"
                          "    command: [[x], '{{ nope }}']\n"
                          "    volumes: [[y], '/a:/b:rx']\n"
                          "  n: {notify: ops}\n"
                          "notifications:\n"
                          "  ops:\n"
                          "    email: {to: a@b, subject: '{{ state | uper }}'}\n"
                          "    webhook: {url: '{{ url'}\n",
                          NULL);
    static const struct {
        int line, col;
        const char *msg;
    } want[] = {
        {3, 3, "task 'a' has more than one kind (image and sensor)"},
        {4, 12, "image: unterminated '{{'"},
        {5, 34, "bad duration 'soon' for 'interval'"},
        {6, 15, "items of 'command' must be strings"},
        {6, 20, "command: 'nope' is not a name dagd provides"},
        {7, 15, "items of 'volumes' must be strings"},
        {7, 20, "bad volume '/a:/b:rx'"},
        {10, 3, "notification 'ops' needs exactly one of email or webhook"},
        {11, 31, "email subject: unknown filter 'uper' (did you mean 'upper'?)"},
        {12, 20, "webhook url: unterminated '{{'"},
    };
    if (d.n != ARRAY_SIZE(want)) dg_diags_print(&d, stderr);
    cr_assert_eq(d.n, ARRAY_SIZE(want));
    for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
        cr_assert(strstr(d.v[i].msg, want[i].msg), "%zu: '%s' lacks '%s'", i, d.v[i].msg, want[i].msg);
        cr_assert(d.v[i].line == want[i].line && d.v[i].col == want[i].col, "%zu: '%s' at %d:%d, want %d:%d", i,
                  d.v[i].msg, d.v[i].line, d.v[i].col, want[i].line, want[i].col);
    }
    dg_diags_free(&d);
}

Test(dag, cycles) {
    expect_error("dag: d\ntasks:\n  a: {image: x, depends_on: c}\n  b: {image: x, depends_on: a}\n"
                 "  c: {image: x, depends_on: b}\n",
                 3, 3, "cycle: a -> b -> c -> a");
    /* reported from the first task in file order that is part of the cycle, downstream */
    expect_error("dag: d\ntasks:\n  start: {image: x}\n  q: {image: x, depends_on: [start, p]}\n"
                 "  p: {image: x, depends_on: r}\n  r: {image: x, depends_on: q}\n"
                 "  after: {image: x, depends_on: q}\n",
                 4, 3, "cycle: q -> r -> p -> q");
    expect_error("dag: d\ntasks:\n  solo: {image: x, depends_on: solo}\n", 3, 3, "cycle: solo -> solo");
    /* two separate cycles are both reported */
    dg_diags d = load_bad("dag: d\ntasks:\n  a: {image: x, depends_on: b}\n  b: {image: x, depends_on: a}\n"
                          "  c: {image: x, depends_on: d}\n  d: {image: x, depends_on: c}\n",
                          NULL);
    cr_assert_eq(d.n, 2);
    cr_assert_str_eq(d.v[0].msg, "cycle: a -> b -> a");
    cr_assert_str_eq(d.v[1].msg, "cycle: c -> d -> c");
    dg_diags_free(&d);
}

Test(dag, topo_and_weights) {
    dg_dag *dag = load_ok("dag: d\ntasks:\n"
                          "  sink: {image: x, depends_on: [left, right], priority_weight: 10}\n"
                          "  left: {image: x, depends_on: src}\n"
                          "  right: {image: x, depends_on: src, priority_weight: 2}\n"
                          "  src: {image: x}\n"
                          "  lone: {image: x}\n",
                          NULL);
    size_t sink = task(dag, "sink"), left = task(dag, "left"), right = task(dag, "right"),
           src = task(dag, "src"), lone = task(dag, "lone");
    /* among the tasks ready at each step, the earliest in the file goes first */
    size_t expect[] = {src, left, right, sink, lone};
    for (size_t i = 0; i < 5; i++) cr_assert_eq(dag->topo[i], expect[i], "topo[%zu]", i);
    cr_assert_eq(dag->tasks[sink].n_upstream, 2);
    cr_assert_eq(dag->tasks[sink].upstream[0], left);
    cr_assert_eq(dag->tasks[sink].upstream[1], right);
    cr_assert_eq(dag->tasks[src].n_downstream, 2);
    /* the diamond counts sink once */
    cr_assert_eq(dg_task_effective_weight(dag, src), 1 + 1 + 2 + 10);
    cr_assert_eq(dg_task_effective_weight(dag, right), 12);
    cr_assert_eq(dg_task_effective_weight(dag, lone), 1);
    dg_dag_free(dag);
}

Test(dag, trigger_rule_names) {
    const char *names[] = {"all_success", "all_failed", "all_done", "one_success", "one_failed",
                           "none_failed", "none_failed_min_one_success", "none_skipped",
                           "always", "one_done", "all_skipped"};
    for (int i = 0; i < _DG_TR_MAX; i++) {
        cr_assert_str_eq(dg_trigger_rule_name(i), names[i]);
        cr_assert_eq(dg_trigger_rule_from_name(names[i]), i);
    }
    cr_assert_eq(dg_trigger_rule_from_name("all_sucess"), -EINVAL);
    cr_assert_eq(dg_trigger_rule_from_name(NULL), -EINVAL);
    cr_assert_null(dg_trigger_rule_name(_DG_TR_MAX));
}

static void check_corpus_file(const char *path) {
    char *text = NULL;
    size_t len = 0;
    cr_assert_eq(dg_read_file(path, &text, &len), 0, "%s", path);
    cr_assert(dg_str_has_prefix(text, "# expect: "), "%s has no expect line", path);
    char *nl = strchr(text, '\n');
    char *want = strndup(text + 10, (size_t)(nl - text - 10));
    free(text);
    dg_diags d = {0};
    dg_dag *dag = NULL;
    int r = dg_dag_load(path, NULL, &dag, &d);
    cr_assert_eq(r, -EINVAL, "%s loaded", path);
    cr_assert_null(dag);
    bool found = false;
    for (size_t i = 0; i < d.n; i++) {
        cr_assert_str_eq(d.v[i].file, path);
        cr_assert_gt(d.v[i].line, 0, "%s: no line for '%s'", path, d.v[i].msg);
        found |= strstr(d.v[i].msg, want) != NULL;
    }
    if (!found) dg_diags_print(&d, stderr);
    cr_assert(found, "%s: no error containing \"%s\"", path, want);
    free(want);
    dg_diags_free(&d);
}

Test(dag, broken_corpus) {
    DIR *dir = opendir(DATA "/broken");
    cr_assert_not_null(dir);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(dir))) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 4, ".yml") != 0) continue;
        char *path = NULL;
        if (asprintf(&path, DATA "/broken/%s", de->d_name) < 0) abort();
        check_corpus_file(path);
        free(path);
        n++;
    }
    closedir(dir);
    cr_assert_geq(n, 40, "corpus too small: %zu", n);
}

Test(dag, valid_corpus) {
    DIR *dir = opendir(DATA "/valid");
    cr_assert_not_null(dir);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(dir))) {
        if (!strstr(de->d_name, ".yml")) continue;
        char *path = NULL;
        if (asprintf(&path, DATA "/valid/%s", de->d_name) < 0) abort();
        dg_diags d = {0};
        dg_dag *dag = NULL;
        int r = dg_dag_load(path, NULL, &dag, &d);
        dg_diags_print(&d, stderr);
        cr_assert_eq(r, 0, "%s", path);
        cr_assert_eq(d.n, 0);
        cr_assert_str_eq(dag->file, path);
        dg_dag_free(dag);
        free(path);
        n++;
    }
    closedir(dir);
    cr_assert_geq(n, 3);
}

#define T(lit) lit, sizeof(lit) - 1 /* lengths that count embedded NULs */

Test(dag, hostile_inputs) {
    static const struct {
        const char *text;
        size_t len;
        const char *needle;
    } cases[] = {
        {T(""), "file is empty"},
        {T("# only a comment\n"), "file is empty"},
        {T("---\n"), "file is empty"},
        {T("\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00"), "not a text file"},
        {T("dag: d\x00\x01\x02garbage"), "not a text file"},
        {T("dag: \"\xc3\x28\"\n"), "invalid UTF-8"},
        {T("dag: d\ntasks:\n  a: {image: x\n"), "YAML syntax error"},
        {T("dag: d\ntasks:\n  a:\n    image: 'x\n"), "YAML syntax error"},
        {T("just a string"), "the top level must be a mapping"},
        {T("42"), "the top level must be a mapping with 'dag' and 'tasks', not an integer"},
        {T("dag: d\ntasks: &t\n  a: *t\n"), "refers to a node that contains it"},
        {T("dag: d\n---\ndag: e\n"), "only one YAML document"},
        {T("dag: \"a\\0b\"\ntasks: {a: {image: x}}\n"), "NUL"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        dg_diags d = {0};
        dg_dag *dag = NULL;
        int r = dg_dag_load_string("t.yml", cases[i].text, cases[i].len, NULL, &dag, &d);
        cr_assert_eq(r, -EINVAL, "case %zu", i);
        cr_assert_null(dag);
        if (!find_diag(&d, cases[i].needle)) dg_diags_print(&d, stderr);
        cr_assert_not_null(find_diag(&d, cases[i].needle), "case %zu: want \"%s\"", i,
                           cases[i].needle);
        dg_diags_free(&d);
    }
}

/* libyaml says what it found; the message adds the usual cause. */
Test(dag, yaml_errors_name_the_usual_cause) {
    expect_error("dag: d\nschedule: @daily\nstart_date: 2025-01-01\ntasks:\n  a: {image: x}\n", 2, 11,
                 "YAML syntax error: found character that cannot start any token (a value that starts with '@' "
                 "must be quoted: schedule: \"@daily\")");
    expect_error("dag: d\ntasks:\n  a: {image: x, command: [echo, `date`]}\n", 3, 33,
                 "(a value that starts with '`' must be quoted: \"`date`\")");
    expect_error("dag: d\ntasks:\n  a:\n\timage: x\n", 4, 1,
                 "(line 4 is indented with a tab; YAML indents with spaces only)");
    expect_error("dag: d\ntasks:\n  a:\n    image: x\n\tcommand: y\n", 5, 1,
                 "(line 5 is indented with a tab; YAML indents with spaces only)");
    expect_error("dag: d\ntasks:\n  a:\n    image: x\n    command: echo a: b  # note\n", 5, 20,
                 "mapping values are not allowed in this context (a value that contains ': ' must be quoted: "
                 "command: \"echo a: b\")");
    expect_error("dag: d\ntasks:\n  a:\n    image: x\n     command: y\n", 5, 13,
                 "(line 5 is indented deeper than line 4: the keys of one mapping line up)");
    expect_error("dag: d\ntasks:\n  a:\n    image: x\n\n   command: y\n", 6, 4,
                 "(line 6 is indented less than line 4: the keys of one mapping line up)");
    /* `{{ ds }}` unquoted is a mapping to YAML */
    expect_error("dag: d\ntasks:\n  a:\n    image: x\n    command: [echo, {{ ds }}]\n", 5, 21,
                 "a value that starts with '{{' must be quoted (YAML reads {{ ... }} as a mapping): \"{{ ds }}\"");
    expect_error("dag: d\ntasks:\n  a:\n    image: x\n    working_dir: {{ params.dir }}\n", 5, 18,
                 "a value that starts with '{{' must be quoted (YAML reads {{ ... }} as a mapping): "
                 "\"{{ params.dir }}\"");
}

Test(dag, billion_laughs_and_depth) {
    dg_buf b = {0};
    dg_buf_puts(&b, "a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (char c = 'b'; c <= 'k'; c++)
        dg_buf_printf(&b, "%c: &%c [*%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c]\n", c, c,
                      c - 1, c - 1, c - 1, c - 1, c - 1, c - 1, c - 1, c - 1, c - 1, c - 1);
    dg_diags d = load_bad(b.data, NULL);
    cr_assert_not_null(find_diag(&d, "document too large"));
    dg_diags_free(&d);
    dg_buf_free(&b);

    for (int i = 0; i < 1000; i++) dg_buf_puts(&b, "[");
    d = load_bad(b.data, NULL);
    cr_assert_not_null(find_diag(&d, "nesting too deep"));
    dg_diags_free(&d);
    dg_buf_free(&b);

    /* aliases that grow deeper with every link stay bounded too */
    dg_buf_puts(&b, "l0: &l0 [x]\n");
    for (int i = 1; i < 300; i++) dg_buf_printf(&b, "l%d: &l%d [*l%d]\n", i, i, i - 1);
    d = load_bad(b.data, NULL);
    cr_assert_not_null(find_diag(&d, "nesting too deep"));
    dg_diags_free(&d);
    dg_buf_free(&b);
}

Test(dag, huge_and_missing_files) {
    size_t len = 9u * 1024 * 1024;
    char *big = malloc(len + 1);
    memset(big, '#', len);
    big[len] = 0;
    dg_diags d = load_bad(big, NULL);
    cr_assert_not_null(find_diag(&d, "file is too large"));
    dg_diags_free(&d);

    char path[] = "/tmp/dagd-test-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, big, len), (ssize_t)len);
    close(fd);
    dg_dag *dag = NULL;
    cr_assert_eq(dg_dag_load(path, NULL, &dag, &d), -EINVAL);
    cr_assert_not_null(find_diag(&d, "file is too large"));
    dg_diags_free(&d);
    unlink(path);
    free(big);

    cr_assert_eq(dg_dag_load("/nonexistent/x.yml", NULL, &dag, &d), -ENOENT);
    cr_assert_eq(d.n, 1);
    cr_assert_str_eq(d.v[0].file, "/nonexistent/x.yml");
    dg_diags_free(&d);
    cr_assert_eq(dg_dag_load("/tmp", NULL, &dag, &d), -EINVAL);
    cr_assert_not_null(find_diag(&d, "not a regular file"));
    dg_diags_free(&d);
    cr_assert_null(dag);
}

Test(dag, truncated_prefixes_never_crash) {
    char *text = NULL;
    size_t len = 0;
    cr_assert_eq(dg_read_file(DATA "/valid/features.yml", &text, &len), 0);
    for (size_t n = 0; n < len; n += 7) {
        dg_diags d = {0};
        dg_dag *dag = NULL;
        int r = dg_dag_load_string("t.yml", text, n, NULL, &dag, &d);
        cr_assert(r == 0 || (r == -EINVAL && d.n > 0 && !dag), "prefix %zu", n);
        dg_dag_free(dag);
        dg_diags_free(&d);
    }
    free(text);
}

Test(dag, free_accepts_null) {
    dg_dag_free(NULL);
    dg_diags_free(NULL);
    cr_assert_eq(dg_dag_task_index(NULL, "a"), -1);
    cr_assert_null(dg_dag_notification(NULL, "a"));
}

Test(dag, placement) {
    dg_dag *d = load_ok("dag: d\ntasks:\n  a:\n    image: x\n    placement:\n      constraints: [\"node.role==worker\", "
                        "\"node.labels.zone!=eu\"]\n      preferences: [\"spread=node.labels.rack\"]\n",
                        NULL);
    const dg_task *t = &d->tasks[task(d, "a")];
    cr_assert_eq(dg_strv_len(t->placement_constraints), 2);
    cr_assert_str_eq(t->placement_constraints[1], "node.labels.zone!=eu");
    cr_assert_str_eq(t->placement_preferences[0], "spread=node.labels.rack");
    dg_dag_free(d);
    expect_error("dag: d\ntasks:\n  a: {image: x, placement: [a]}\n", 3, 28, "'placement' must be a mapping");
    expect_error("dag: d\ntasks:\n  a: {image: x, placement: {constraint: [a]}}\n", 3, 29,
                 "unknown key 'constraint' in placement (did you mean 'constraints'?)");
    expect_error("dag: d\ntasks:\n  a: {image: x, placement: {constraints: [node.role=worker]}}\n", 3, 43,
                 "bad placement constraint 'node.role=worker'");
    expect_error("dag: d\ntasks:\n  a: {image: x, placement: {preferences: [node.labels.x]}}\n", 3, 43,
                 "bad placement preference 'node.labels.x'");
}

/* The dag, http and command sensors (docs/dags.md, "Sensor tasks"): fields and defaults. */
Test(dag, sensor_kinds) {
    dg_dag *dag = load_ok("dag: d\n"
                          "tasks:\n"
                          "  up:\n"
                          "    sensor: {dag: other, task: load, allowed_states: [success, skipped], failed_states: failed,\n"
                          "             delta: 1h, mode: reschedule, soft_fail: true, interval: 5s, timeout: 1m}\n"
                          "  back:\n"
                          "    sensor: {dag: other, delta: -30m}\n"
                          "  web:\n"
                          "    sensor: {http: 'http://h/{{ ds }}', status: 204, body: '^ok$', request_timeout: 2s}\n"
                          "  probe:\n"
                          "    sensor: {image: 'busybox:{{ ds }}', command: 'test -e /d/x'}\n"
                          "    volumes: ['/tmp:/d:ro']\n"
                          "    env: {A: b}\n"
                          "    pull: never\n"
                          "  f: {sensor: {file: /x}}\n",
                          NULL);
    const dg_sensor *s = &dag->tasks[task(dag, "up")].sensor;
    cr_assert_eq(s->kind, DG_SENSOR_DAG);
    cr_assert_str_eq(s->dag_id, "other");
    cr_assert_str_eq(s->task_id, "load");
    cr_assert_str_eq(s->allowed_states[0], "success");
    cr_assert_str_eq(s->allowed_states[1], "skipped");
    cr_assert_null(s->allowed_states[2]);
    cr_assert_str_eq(s->failed_states[0], "failed");
    cr_assert_null(s->failed_states[1]);
    cr_assert_eq(s->delta_ms, 3600000);
    cr_assert(s->reschedule);
    cr_assert(s->soft_fail);
    cr_assert_eq(s->interval_ms, 5000);
    cr_assert_eq(s->timeout_ms, 60000);
    s = &dag->tasks[task(dag, "back")].sensor;
    cr_assert_null(s->task_id);
    cr_assert_str_eq(s->allowed_states[0], "success"); /* the default */
    cr_assert_null(s->allowed_states[1]);
    cr_assert_null(s->failed_states);
    cr_assert_eq(s->delta_ms, -1800000);
    cr_assert_not(s->soft_fail);
    s = &dag->tasks[task(dag, "web")].sensor;
    cr_assert_eq(s->kind, DG_SENSOR_HTTP);
    cr_assert_str_eq(s->url, "http://h/{{ ds }}");
    cr_assert_eq(s->status, 204);
    cr_assert_str_eq(s->body, "^ok$");
    cr_assert_eq(s->request_timeout_ms, 2000);
    const dg_task *p = &dag->tasks[task(dag, "probe")];
    cr_assert_eq(p->kind, DG_KIND_SENSOR);
    cr_assert_eq(p->sensor.kind, DG_SENSOR_COMMAND);
    cr_assert_str_eq(p->image, "busybox:{{ ds }}");
    cr_assert_str_eq(p->command[0], "test");
    cr_assert_str_eq(p->command[2], "/d/x");
    cr_assert_str_eq(p->volumes[0], "/tmp:/d:ro");
    cr_assert_eq(p->n_env, 1);
    cr_assert_eq(p->pull, DG_PULL_NEVER);
    const dg_task *w = &dag->tasks[task(dag, "web")];
    cr_assert_eq(w->sensor.request_timeout_ms, 2000);
    s = &dag->tasks[task(dag, "f")].sensor;
    cr_assert_eq(s->kind, DG_SENSOR_FILE);
    cr_assert_eq(s->status, 200); /* defaults, though unused by a file sensor */
    cr_assert_eq(s->request_timeout_ms, 10000);
    dg_dag_free(dag);
}

Test(dag, sensor_errors) {
    expect_error("dag: d\ntasks:\n  a: {sensor: {interval: 1s}}\n", 3, 15,
                 "sensor needs one of 'file', 'dag', 'http' or 'command'");
    expect_error("dag: d\ntasks:\n  a: {sensor: {file: /x, http: 'http://h'}}\n", 3, 15,
                 "sensor checks more than one thing (file and http)");
    expect_error("dag: d\ntasks:\n  a: {sensor: {dag: o, status: 200}}\n", 3, 24,
                 "key 'status' does not apply to a dag sensor");
    expect_error("dag: d\ntasks:\n  a: {sensor: {http: 'http://h', task: t}}\n", 3, 34,
                 "key 'task' does not apply to an http sensor");
    expect_error("dag: d\ntasks:\n  a: {sensor: {dag: o, alowed_states: [success]}}\n", 3, 24,
                 "unknown key 'alowed_states' in task 'a' (did you mean 'allowed_states'?)");
    expect_error("dag: d\ntasks:\n  a: {sensor: {dag: 'o o'}}\n", 3, 21, "bad DAG id 'o o'");
    expect_error("dag: d\ntasks:\n  a: {sensor: {dag: o, allowed_states: [sucess]}}\n", 3, 41,
                 "bad run state 'sucess' (did you mean 'success'?)");
    expect_error("dag: d\ntasks:\n  a: {sensor: {dag: o, allowed_states: [upstream_failed]}}\n", 3, 41,
                 "bad run state 'upstream_failed'");
    expect_error("dag: d\ntasks:\n  a: {sensor: {dag: o, task: t, failed_states: [upstream_faild]}}\n", 3, 49,
                 "bad task state 'upstream_faild' (did you mean 'upstream_failed'?)");
    expect_error("dag: d\ntasks:\n  a: {sensor: {dag: o, failed_states: [success]}}\n", 3, 39,
                 "state 'success' is both allowed and failed");
    expect_error("dag: d\ntasks:\n  a: {sensor: {dag: o, delta: soon}}\n", 3, 31, "bad duration 'soon' for 'delta'");
    expect_error("dag: d\ntasks:\n  a: {sensor: {http: 'ftp://h'}}\n", 3, 22,
                 "sensor 'http' must be an http:// or https:// URL");
    expect_error("dag: d\ntasks:\n  a: {sensor: {http: 'http://h', status: 99}}\n", 3, 42, "'status' must be at least 100");
    expect_error("dag: d\ntasks:\n  a: {sensor: {http: 'http://h', body: 'a('}}\n", 3, 40,
                 "sensor 'body' is not a valid regular expression");
    expect_error("dag: d\ntasks:\n  a: {sensor: {http: 'http://h/{{ nope }}'}}\n", 3, 22, "sensor http:");
    expect_error("dag: d\ntasks:\n  a: {sensor: {http: 'http://h', request_timeout: 0s}}\n", 3, 51,
                 "'request_timeout' must be longer than 0");
    expect_error("dag: d\ntasks:\n  a: {sensor: {command: [x]}}\n", 3, 15,
                 "a command sensor needs an 'image' for its probe container");
    expect_error("dag: d\ntasks:\n  a: {sensor: {image: x, command: [x]}, command: [y]}\n", 3, 41,
                 "key 'command' does not apply to sensor task 'a' (a command sensor's command goes in its 'sensor')");
    expect_error("dag: d\ntasks:\n  a: {sensor: {image: x, command: [x]}, output: {file: /x}}\n", 3, 41,
                 "key 'output' does not apply to sensor task 'a'");
    expect_error("dag: d\ntasks:\n  a: {sensor: {dag: o}, volumes: ['/a:/b']}\n", 3, 25,
                 "key 'volumes' does not apply to sensor task 'a' (container keys apply to a command sensor's probe only)");
    expect_error("dag: d\ntasks:\n  a: {sensor: {file: /x, mode: pok}}\n", 3, 32, "bad sensor mode 'pok' (did you mean 'poke'?)");
    expect_error("dag: d\ntasks:\n  a: {sensor: {file: /x, soft_fail: 1}}\n", 3, 37, "'soft_fail' must be true or false");
    expect_error("dag: d\ntasks:\n  a: {sensor: {image: x, command: [x], mode: wait}}\n", 3, 46, "bad sensor mode 'wait'");
}
