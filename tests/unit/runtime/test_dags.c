/* runtime/dags: the one complete validation that validate, run and serve share, and the
 * folder scan and id resolver; on real files in a temporary folder, no engine needed. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dagd/runtime.h"

static char dir[64];

static void setup(void) {
    strcpy(dir, "/tmp/dagd-dags-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    unsetenv("DAGD_POOLS");
    unsetenv("DAGD_POLICY_ALLOW_PRIVILEGED");
    unsetenv("DAGD_POLICY_ALLOWED_VOLUME_PREFIXES");
    unsetenv("DAGD_POLICY_ALLOWED_SENSITIVE_PATHS");
    unsetenv("DAGD_POLICY_ALLOW_HOST_NETWORK");
    unsetenv("DAGD_CONN_MART");
}

static void teardown(void) {
    _cleanup_free_ char *cmd = xasprintf("rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

static char *put(const char *name, const char *text) {
    char *path = xasprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void config(dg_config *c) {
    dg_error err = {0};
    cr_assert_eq(dg_config_load(NULL, c, &err), 0, "%s", err.msg);
}

/* Every message of path's validation, as "line:col: message", joined by '\n'. */
static char *verdict(const dg_config *c, const char *path) {
    dg_dag *dag = NULL;
    _cleanup_diags_ dg_diags d = {0};
    if (dg_dags_load(c, path, &dag, &d) == 0) {
        cr_assert_eq(d.n, 0);
        dg_dag_free(dag);
        return xstrdup("ok");
    }
    dg_buf b = {0};
    for (size_t i = 0; i < d.n; i++) {
        cr_assert_str_eq(d.v[i].file, path);
        dg_buf_printf(&b, "%s%d:%d: %s", i ? "\n" : "", d.v[i].line, d.v[i].col, d.v[i].msg);
    }
    return dg_buf_steal(&b);
}

TestSuite(dags, .init = setup, .fini = teardown);

Test(dags, templates_are_part_of_validation) {
    _cleanup_free_ char *p = put("t.yml", "dag: t\n"
                                          "tasks:\n"
                                          "  a:\n"
                                          "    image: busybox\n"
                                          "    command: [sh, -c, \"echo {{ ds \"]\n");
    _cleanup_(dg_config_free) dg_config c = {0};
    config(&c);
    _cleanup_free_ char *v = verdict(&c, p);
    cr_assert_str_eq(v, "5:23: command: unterminated '{{' at offset 5 in template '{{ ds '");
}

/* Every problem of a file in one pass: a key, a template, a dependency, a schedule, a
 * cycle and what the configuration knows, each at the value that holds it. */
Test(dags, every_problem_in_one_pass) {
    _cleanup_free_ char *p = put("all.yml", "dag: all\n"
                                            "schedule: '0 25 * * *'\n"
                                            "tasks:\n"
                                            "  a:\n"
                                            "    image: busybox\n"
                                            "    retires: 2\n"
                                            "    command: [echo, \"{{ ds \"]\n"
                                            "    depends_on: [b, nope]\n"
                                            "    pool: spark\n"
                                            "  b:\n"
                                            "    image: busybox\n"
                                            "    env: {DAY: \"{{ next_ds }}\"}\n"
                                            "    depends_on: [a]\n");
    _cleanup_(dg_config_free) dg_config c = {0};
    config(&c);
    _cleanup_free_ char *v = verdict(&c, p);
    cr_assert_str_eq(v, "2:11: bad schedule '0 25 * * *': hour field: 25 is out of range 0-23\n"
                        "2:11: a schedule needs a start_date\n"
                        "4:3: cycle: a -> b -> a\n"
                        "6:5: unknown key 'retires' in task 'a' (did you mean 'retries'?)\n"
                        "7:21: command: unterminated '{{' at offset 0 in template '{{ ds '\n"
                        "8:21: unknown task 'nope' in depends_on\n"
                        "9:11: unknown pool 'spark' (no pools are configured, only default_pool; define it under "
                        "'pools' in the configuration file, or in DAGD_POOLS as spark=SLOTS)\n"
                        "12:16: env 'DAY': 'next_ds' is not provided by dagd (Airflow 2 deprecated it; use "
                        "data_interval_end, or macros.ds_add(ds, 1) for the next day) in template '{{ next_ds }}'");
}

Test(dags, policy_is_part_of_validation) {
    _cleanup_free_ char *p = put("p.yml", "dag: p\n"
                                          "tasks:\n"
                                          "  a:\n"
                                          "    image: busybox\n"
                                          "    privileged: true\n"
                                          "    network: host\n"
                                          "    volumes: [\"/run:/host\", \"{{ params.x }}:/y\", \"named:/z\"]\n");
    _cleanup_(dg_config_free) dg_config c = {0};
    config(&c);
    _cleanup_free_ char *v = verdict(&c, p);
    cr_assert_str_eq(v, "3:3: task 'a': privileged: true is refused by policy (policy.allow_privileged)\n"
                        "3:3: task 'a': network: host gives the container the host's network stack; refused by "
                        "policy (policy.allow_host_network)\n"
                        "3:3: task 'a': volumes: /run gives the container the Docker engine's socket; refused "
                        "by policy (policy.allow_docker_socket)");
    setenv("DAGD_POLICY_ALLOW_PRIVILEGED", "true", 1);
    setenv("DAGD_POLICY_ALLOW_DOCKER_SOCKET", "true", 1);
    setenv("DAGD_POLICY_ALLOWED_VOLUME_PREFIXES", "/srv", 1);
    setenv("DAGD_POLICY_ALLOWED_SENSITIVE_PATHS", "/run", 1); /* /run holds other runtimes' sockets */
    setenv("DAGD_POLICY_ALLOW_HOST_NETWORK", "true", 1);
    _cleanup_(dg_config_free) dg_config c2 = {0};
    config(&c2);
    _cleanup_free_ char *v2 = verdict(&c2, p);
    unsetenv("DAGD_POLICY_ALLOW_DOCKER_SOCKET");
    unsetenv("DAGD_POLICY_ALLOWED_SENSITIVE_PATHS");
    unsetenv("DAGD_POLICY_ALLOW_HOST_NETWORK");
    cr_assert_str_eq(v2, "3:3: task 'a': volumes: host path /run is outside policy.allowed_volume_prefixes");
}

Test(dags, names_the_configuration_knows) {
    _cleanup_free_ char *p = put("n.yml", "dag: n\n"
                                          "tasks:\n"
                                          "  a:\n"
                                          "    image: busybox\n"
                                          "    pool: gpu\n"
                                          "    connections: [mart, wherehouse]\n"
                                          "  b: {image: busybox, pool: default_pool}\n");
    /* no pools configured: only default_pool exists; connections are not checked */
    _cleanup_(dg_config_free) dg_config c = {0};
    config(&c);
    _cleanup_free_ char *v = verdict(&c, p);
    cr_assert_str_eq(v, "5:11: unknown pool 'gpu' (no pools are configured, only default_pool; define it under "
                        "'pools' in the configuration file, or in DAGD_POOLS as gpu=SLOTS)");
    setenv("DAGD_POOLS", "spark=2,etl=1", 1);
    setenv("DAGD_CONN_MART", "postgres://u:p@h/db", 1);
    _cleanup_(dg_config_free) dg_config c2 = {0};
    config(&c2);
    _cleanup_free_ char *v2 = verdict(&c2, p);
    cr_assert(strstr(v2, "5:11: unknown pool 'gpu' (the pools are default_pool, spark and etl; define it under "
                         "'pools' in the configuration file, or in DAGD_POOLS as gpu=SLOTS)"),
              "%s", v2);
    cr_assert(strstr(v2, "unknown connection 'wherehouse'"), "%s", v2);
    cr_assert_null(strstr(v2, "'mart'"), "%s", v2);
    cr_assert_null(strstr(v2, "default_pool'"), "%s", v2);
    setenv("DAGD_POOLS", "gpu=1", 1);
    unsetenv("DAGD_CONN_MART");
    _cleanup_(dg_config_free) dg_config c3 = {0};
    config(&c3);
    _cleanup_free_ char *v3 = verdict(&c3, p);
    cr_assert_str_eq(v3, "ok");
}

Test(dags, scan_and_resolve) {
    free(put("b.yml", "dag: second\ntasks: {a: {image: busybox}}\n"));
    free(put("a.yaml", "dag: first\ntasks: {a: {image: busybox}}\n"));
    free(put(".hidden.yml", "dag: hidden\ntasks: {a: {image: busybox}}\n"));
    free(put("notes.txt", "not a DAG\n"));
    free(put("c.yml", "dag: broken\ntasks: {a: {image: busybox, command: \"{{\"}}\n"));
    char **files = NULL;
    size_t n = 0;
    cr_assert_eq(dg_dags_scan(dir, &files, &n), 0);
    cr_assert_eq(n, 3);
    _cleanup_free_ char *a = xasprintf("%s/a.yaml", dir);
    cr_assert_str_eq(files[0], a);
    dg_strv_free(files);

    _cleanup_(dg_config_free) dg_config c = {0};
    config(&c);
    dg_dag *dag = NULL;
    _cleanup_diags_ dg_diags d = {0};
    _cleanup_error_ dg_error err = {0};
    cr_assert_eq(dg_dags_resolve(&c, "second", dir, &dag, &d, &err), 0, "%s", err.msg);
    cr_assert_str_eq(dag->dag_id, "second");
    dg_dag_free(dag);
    /* the id a broken file declares: that file is named */
    cr_assert_eq(dg_dags_resolve(&c, "broken", dir, &dag, &d, &err), -ENOENT);
    cr_assert(strstr(err.msg, "DAG 'broken' is declared in") && strstr(err.msg, "/c.yml, which has errors"), "%s",
              err.msg);
    dg_error_clear(&err);
    cr_assert_eq(dg_dags_resolve(&c, "nosuch", dir, &dag, &d, &err), -ENOENT);
    cr_assert(strstr(err.msg, "no DAG 'nosuch' in") && strstr(err.msg, "some files there have errors"), "%s",
              err.msg);
}

Test(dags, declared_id_of_a_broken_file) {
    _cleanup_free_ char *bad_key = put("k.yml", "dag: keyed\ntasks: {a: {image: busybox, retires: 2}}\n");
    _cleanup_free_ char *bad_yaml = put("y.yml", "dag: [unclosed\n");
    _cleanup_free_ char *no_id = put("n.yml", "tasks: {a: {image: busybox}}\n");
    _cleanup_free_ char *id = dg_dags_declared_id(bad_key);
    cr_assert_str_eq(id, "keyed");
    cr_assert_null(dg_dags_declared_id(bad_yaml));
    cr_assert_null(dg_dags_declared_id(no_id));
    _cleanup_free_ char *missing = xasprintf("%s/missing.yml", dir);
    cr_assert_null(dg_dags_declared_id(missing));
}
