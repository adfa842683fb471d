/* config: dagd.yml, DAGD_* overrides, defaults, errors with file:line:col. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dagd/config.h"

static char dir[] = "/tmp/dagd-config-XXXXXX";

static void setup(void) {
    cr_assert_not_null(mkdtemp(dir));
    const char *vars[] = {"DAGD_DAGS_FOLDER", "DAGD_STATE_DIR", "DAGD_LISTEN", "DAGD_PARALLELISM", "DAGD_POOLS",
                          "DAGD_LOG", "DAGD_SMTP_URL", "DAGD_POLICY_ALLOW_PRIVILEGED", "DAGD_BACKEND",
                          "DAGD_API_MAX_CONNECTIONS", "DAGD_API_MAX_CONNECTIONS_PER_ADDRESS",
                          "DAGD_API_REQUEST_HEAD_TIMEOUT", "STATE_DIRECTORY", "XDG_STATE_HOME"};
    for (size_t i = 0; i < ARRAY_SIZE(vars); i++) unsetenv(vars[i]);
    setenv("HOME", dir, 1);
}

static char *write_file(const char *text) {
    char *path = xasprintf("%s/dagd.yml", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

TestSuite(config, .init = setup);

Test(config, defaults) {
    dg_config c;
    dg_error err = {0};
    cr_assert_eq(dg_config_load(NULL, &c, &err), 0);
    cr_assert_str_eq(c.dags_folder, "dags");
    cr_assert_str_eq(c.listen, "127.0.0.1:8080");
    cr_assert_eq(c.parallelism, 32);
    cr_assert_str_eq(c.backend, "local");
    cr_assert_eq(c.api_max_connections, 1024);
    cr_assert_eq(c.api_max_connections_per_address, 64);
    cr_assert_eq(c.api_request_head_timeout, 10);
    cr_assert_str_eq(c.log, "auto");
    cr_assert_str_eq(c.container_log_max_size, "1g");
    char *want = xasprintf("%s/.local/state/dagd", dir);
    cr_assert_str_eq(c.state_dir, want);
    free(want);
    dg_config_free(&c);
    setenv("STATE_DIRECTORY", "/var/lib/dagd:/other", 1);
    cr_assert_eq(dg_config_load(NULL, &c, &err), 0);
    cr_assert_str_eq(c.state_dir, "/var/lib/dagd");
    dg_config_free(&c);
}

Test(config, file_then_environment) {
    _cleanup_free_ char *path = write_file("dags_folder: /srv/dags\n"
                                           "listen: 0.0.0.0:9000\n"
                                           "parallelism: 8\n"
                                           "pools: {spark: 2, db: 4}\n"
                                           "smtp: {url: 'smtp://mail:25', from: dagd@example.com}\n"
                                           "policy:\n  allow_privileged: true\n  allowed_volume_prefixes: [/data, /apps]\n"
                                           "log: stderr\n"
                                           "api: {max_connections: 300, max_connections_per_address: 8, "
                                           "request_head_timeout: 5}\n");
    setenv("DAGD_PARALLELISM", "3", 1);
    setenv("DAGD_API_REQUEST_HEAD_TIMEOUT", "7", 1);
    setenv("DAGD_POOLS", "db=1,gpu=2", 1);
    dg_config c;
    dg_error err = {0};
    cr_assert_eq(dg_config_load(path, &c, &err), 0, "%s", err.msg);
    cr_assert_str_eq(c.dags_folder, "/srv/dags");
    cr_assert_str_eq(c.listen, "0.0.0.0:9000");
    cr_assert_eq(c.parallelism, 3, "the environment wins over the file");
    cr_assert_eq(c.n_pools, 3);
    int spark = -1, db = -1, gpu = -1;
    for (size_t i = 0; i < c.n_pools; i++) {
        if (!strcmp(c.pools[i].name, "spark")) spark = c.pools[i].slots;
        if (!strcmp(c.pools[i].name, "db")) db = c.pools[i].slots;
        if (!strcmp(c.pools[i].name, "gpu")) gpu = c.pools[i].slots;
    }
    cr_assert_eq(spark, 2);
    cr_assert_eq(db, 1);
    cr_assert_eq(gpu, 2);
    cr_assert_str_eq(c.smtp_url, "smtp://mail:25");
    cr_assert_str_eq(c.smtp_from, "dagd@example.com");
    cr_assert(c.allow_privileged);
    cr_assert_eq(dg_strv_len(c.allowed_volume_prefixes), 2);
    cr_assert_str_eq(c.allowed_volume_prefixes[1], "/apps");
    cr_assert_str_eq(c.log, "stderr");
    cr_assert_eq(c.api_max_connections, 300);
    cr_assert_eq(c.api_max_connections_per_address, 8);
    cr_assert_eq(c.api_request_head_timeout, 7, "the environment wins over the file");
    unsetenv("DAGD_API_REQUEST_HEAD_TIMEOUT");
    dg_config_free(&c);
}

static void expect_error(const char *text, const char *needle) {
    _cleanup_free_ char *path = write_file(text);
    dg_config c;
    dg_error err = {0};
    cr_assert_lt(dg_config_load(path, &c, &err), 0, "should fail: %s", text);
    cr_assert_not_null(err.msg);
    cr_assert(strstr(err.msg, needle), "'%s' not in '%s'", needle, err.msg);
    dg_error_clear(&err);
}

Test(config, errors) {
    expect_error("paralelism: 4\n", "did you mean 'parallelism'");
    expect_error("parallelism: 4\nlisten: x\nbogus: 1\n", ":3:1: error: unknown setting 'bogus'");
    expect_error("parallelism: lots\n", "invalid value 'lots'");
    expect_error("parallelism: 0\n", "invalid value '0'");
    expect_error("backend: k8s\n", "invalid value 'k8s'");
    expect_error("log: syslog\n", "invalid value 'syslog'");
    expect_error("smtp: {uri: x}\n", "did you mean 'smtp.url'");
    expect_error("policy: {allow_privileged: maybe}\n", "invalid value 'maybe'");
    expect_error("pools: {spark: many}\n", "pools.spark: invalid value 'many' (expected a number of slots");
    expect_error("smtp: plain\n", "'smtp' must be a mapping");
    expect_error("listen: [a, b]\n", "'listen' must be a single value");
    expect_error("- just\n- a list\n", "expected a mapping of settings");
    expect_error("listen: [unclosed\n", "error");
    expect_error("", "empty");
}

Test(config, environment_errors) {
    setenv("DAGD_PARALLELISM", "-2", 1);
    dg_config c;
    dg_error err = {0};
    cr_assert_lt(dg_config_load(NULL, &c, &err), 0);
    cr_assert(strstr(err.msg, "DAGD_PARALLELISM"), "%s", err.msg);
    dg_error_clear(&err);
    unsetenv("DAGD_PARALLELISM");
    setenv("DAGD_POOLS", "spark", 1);
    cr_assert_lt(dg_config_load(NULL, &c, &err), 0);
    cr_assert(strstr(err.msg, "DAGD_POOLS"), "%s", err.msg);
    dg_error_clear(&err);
}

/* One place in front (file:line:col of the value, or the variable), then the setting, the
 * value and the form that is accepted. */
static void expect_message(const char *text, const char *want_after_path) {
    _cleanup_free_ char *path = write_file(text);
    dg_config c;
    dg_error err = {0};
    cr_assert_lt(dg_config_load(path, &c, &err), 0, "should fail: %s", text);
    _cleanup_free_ char *want = xasprintf("%s%s", path, want_after_path);
    cr_assert_str_eq(err.msg, want);
    dg_error_clear(&err);
}

static void expect_env_message(const char *var, const char *value, const char *want) {
    setenv(var, value, 1);
    dg_config c;
    dg_error err = {0};
    cr_assert_lt(dg_config_load(NULL, &c, &err), 0, "%s=%s should fail", var, value);
    unsetenv(var);
    cr_assert_str_eq(err.msg, want);
    dg_error_clear(&err);
}

Test(config, errors_name_the_setting_and_the_form) {
    expect_message("listen: x\nparallelism: lots\n",
                   ":2:14: error: parallelism: invalid value 'lots' (expected a whole number from 1 to 100000)");
    expect_message("log: syslog\n", ":1:6: error: log: invalid value 'syslog' (expected auto, journald or stderr)");
    expect_message("backend: k8s\n", ":1:10: error: backend: invalid value 'k8s' (expected local or swarm)");
    expect_message("policy:\n  allow_privileged: maybe\n",
                   ":2:21: error: policy.allow_privileged: invalid value 'maybe' (expected true or false)");
    expect_message("pools: {spark: 2, etl: 0}\n",
                   ":1:24: error: pools.etl: invalid value '0' (expected a number of slots, a whole number from 1 "
                   "to 100000)");
    expect_message("pools: spark\n", ":1:8: error: pools: invalid value 'spark' (expected name=slots,name=slots)");
    expect_env_message("DAGD_POOLS", "spark:1", "DAGD_POOLS: invalid value 'spark:1' (expected name=slots,name=slots)");
    expect_env_message("DAGD_POOLS", "spark=2,etl=x",
                       "DAGD_POOLS: invalid value 'spark=2,etl=x' (expected name=slots,name=slots)");
    expect_env_message("DAGD_PARALLELISM", "many",
                       "DAGD_PARALLELISM: invalid value 'many' (expected a whole number from 1 to 100000)");
    expect_env_message("DAGD_POLICY_ALLOW_PRIVILEGED", "maybe",
                       "DAGD_POLICY_ALLOW_PRIVILEGED: invalid value 'maybe' (expected true or false)");
    expect_message("api:\n  max_connections_per_address: 0\n",
                   ":2:32: error: api.max_connections_per_address: invalid value '0' (expected a whole number "
                   "from 1 to 100000)");
    expect_message("api: {max_conections: 9}\n",
                   ":1:7: error: unknown setting 'api.max_conections' (did you mean 'api.max_connections'?)");
    expect_env_message("DAGD_API_REQUEST_HEAD_TIMEOUT", "3601",
                       "DAGD_API_REQUEST_HEAD_TIMEOUT: invalid value '3601' (expected a number of seconds from 1 to "
                       "3600)");
    expect_env_message("DAGD_LOG", "syslog", "DAGD_LOG: invalid value 'syslog' (expected auto, journald or stderr)");
    expect_message("container_log_max_size: 10 MB\n",
                   ":1:25: error: container_log_max_size: invalid value '10 MB' (expected a size such as 100m or "
                   "1g, or engine)");
    expect_env_message("DAGD_CONTAINER_LOG_MAX_SIZE", "0m",
                       "DAGD_CONTAINER_LOG_MAX_SIZE: invalid value '0m' (expected a size such as 100m or 1g, or "
                       "engine)");
    expect_env_message("DAGD_CONTAINER_LOG_MAX_SIZE", "1gb",
                       "DAGD_CONTAINER_LOG_MAX_SIZE: invalid value '1gb' (expected a size such as 100m or 1g, or "
                       "engine)");
}

Test(config, container_log_max_size) {
    dg_config c;
    dg_error err = {0};
    const char *good[] = {"engine", "100m", "2g", "512k", "1048576"};
    for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
        setenv("DAGD_CONTAINER_LOG_MAX_SIZE", good[i], 1);
        cr_assert_eq(dg_config_load(NULL, &c, &err), 0, "%s: %s", good[i], err.msg);
        cr_assert_str_eq(c.container_log_max_size, good[i]);
        dg_config copy;
        dg_config_copy(&copy, &c);
        cr_assert_str_eq(copy.container_log_max_size, good[i]);
        dg_config_free(&copy);
        dg_config_free(&c);
    }
    unsetenv("DAGD_CONTAINER_LOG_MAX_SIZE");
}

Test(config, missing_file) {
    dg_config c;
    dg_error err = {0};
    cr_assert_lt(dg_config_load("/nonexistent/dagd.yml", &c, &err), 0);
    cr_assert(strstr(err.msg, "/nonexistent/dagd.yml"), "%s", err.msg);
    dg_error_clear(&err);
}

/* A copy owns everything it points to: the original can go, and pools can be replaced. */
Test(config, copy_is_independent) {
    _cleanup_free_ char *path = write_file("dags_folder: /srv/dags\n"
                                           "pools: {spark: 2, db: 4}\n"
                                           "policy:\n  allowed_volume_prefixes: [/data]\n"
                                           "  allowed_sensitive_paths: [/etc/ssl, /run/containerd]\n"
                                           "  allow_host_network: true\n");
    dg_config c, d;
    dg_error err = {0};
    cr_assert_eq(dg_config_load(path, &c, &err), 0, "%s", err.msg);
    dg_config_copy(&d, &c);
    cr_assert_neq(d.dags_folder, c.dags_folder);
    cr_assert_neq(d.pools, c.pools);
    dg_config_free(&c);
    cr_assert_str_eq(d.dags_folder, "/srv/dags");
    cr_assert_eq(d.n_pools, 2);
    cr_assert_str_eq(d.pools[0].name, "spark");
    cr_assert_eq(d.pools[1].slots, 4);
    cr_assert_str_eq(d.allowed_volume_prefixes[0], "/data");
    cr_assert_eq(dg_strv_len(d.allowed_sensitive_paths), 2);
    cr_assert_str_eq(d.allowed_sensitive_paths[1], "/run/containerd");
    cr_assert(d.allow_host_network);
    cr_assert(!d.allow_container_network);
    dg_config_pool one[] = {{.name = (char *)"gpu", .slots = 1}};
    dg_config_set_pools(&d, one, 1);
    cr_assert_eq(d.n_pools, 1);
    cr_assert_str_eq(d.pools[0].name, "gpu");
    cr_assert_neq(d.pools[0].name, one[0].name);
    dg_config_free(&d);
}

/* Connections reach the executor through the configuration: the file's, then
 * DAGD_CONN_<ID> (which wins), under the normalised id templates use. */
Test(config, connections_file_then_environment) {
    _cleanup_free_ char *conns = xasprintf("%s/conns.yml", dir);
    FILE *f = fopen(conns, "w");
    cr_assert_not_null(f);
    fputs("Mart-DB: postgres://u:p@file/db\nother: sqlite:///x\n", f);
    fclose(f);
    cr_assert_eq(chmod(conns, 0644), 0);
    _cleanup_free_ char *cfgtext = xasprintf("connections_file: %s\nsmtp: {url: smtp://m:25, user: u, password: pw}\n",
                                             conns);
    _cleanup_free_ char *path = write_file(cfgtext);
    dg_config c = {0};
    dg_error err = {0};
    cr_assert_eq(dg_config_load(path, &c, &err), -EPERM);
    cr_assert(strstr(err.msg, "readable by others") && strstr(err.msg, "chmod 600"), "%s", err.msg);
    dg_error_clear(&err);
    cr_assert_eq(chmod(conns, 0600), 0);
    setenv("DAGD_CONN_MART_DB", "postgres://u:p@env/db", 1);
    cr_assert_eq(dg_config_load(path, &c, &err), 0, "%s", err.msg);
    unsetenv("DAGD_CONN_MART_DB");
    cr_assert_str_eq(json_string_value(json_object_get(c.connections, "mart_db")), "postgres://u:p@env/db");
    cr_assert_str_eq(json_string_value(json_object_get(c.connections, "other")), "sqlite:///x");
    cr_assert_eq(json_object_size(c.connections), 2);
    cr_assert_str_eq(c.smtp_user, "u");
    cr_assert_str_eq(c.smtp_password, "pw");
    dg_config d;
    dg_config_copy(&d, &c);
    dg_config_free(&c);
    cr_assert_str_eq(json_string_value(json_object_get(d.connections, "other")), "sqlite:///x");
    cr_assert_str_eq(d.smtp_url, "smtp://m:25");
    dg_config_free(&d);
}

Test(config, container_network_policy_from_the_environment) {
    setenv("DAGD_POLICY_ALLOW_CONTAINER_NETWORK", "yes", 1);
    setenv("DAGD_POLICY_ALLOWED_SENSITIVE_PATHS", "/etc,/proc", 1);
    dg_config c;
    dg_error err = {0};
    int r = dg_config_load(NULL, &c, &err);
    unsetenv("DAGD_POLICY_ALLOW_CONTAINER_NETWORK");
    unsetenv("DAGD_POLICY_ALLOWED_SENSITIVE_PATHS");
    cr_assert_eq(r, 0, "%s", err.msg);
    cr_assert(c.allow_container_network);
    cr_assert(!c.allow_host_network);
    cr_assert_eq(dg_strv_len(c.allowed_sensitive_paths), 2);
    cr_assert_str_eq(c.allowed_sensitive_paths[0], "/etc");
    dg_config_free(&c);
    expect_env_message("DAGD_POLICY_ALLOW_HOST_NETWORK", "maybe",
                       "DAGD_POLICY_ALLOW_HOST_NETWORK: invalid value 'maybe' (expected true or false)");
}
