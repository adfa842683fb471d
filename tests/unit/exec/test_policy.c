/* exec/spec: the container policy's judge (docs/dags.md, "The container policy"): host
 * paths cleaned and resolved as the engine would mount them, every refused form of bind
 * and network, and the opt-ins. Pure: real paths of this host and a temporary folder, no
 * engine. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dagd/exec.h"

static char dir[64];
static const char *const engine_socket[] = {"/run/docker.sock", NULL};

static void setup(void) {
    strcpy(dir, "/tmp/dagd-policy-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    _cleanup_free_ char *real = realpath(dir, NULL); /* /tmp itself may be a link */
    cr_assert_not_null(real);
    strcpy(dir, real);
}

static void teardown(void) {
    _cleanup_free_ char *cmd = xasprintf("rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(policy, .init = setup, .fini = teardown);

static void expect_path(const char *in, const char *want) {
    _cleanup_free_ char *got = dg_exec_host_path(in);
    cr_assert_str_eq(got, want, "%s", in);
}

Test(policy, host_paths_are_cleaned_then_resolved) {
    expect_path("/", "/");
    expect_path("//", "/");
    expect_path("/..", "/");
    expect_path("/etc/", "/etc");
    expect_path("/etc//ssl/./", "/etc/ssl");
    expect_path("/nonexistent-dagd/../../etc", "/etc");
    expect_path("/nonexistent-dagd/a/../b/", "/nonexistent-dagd/b");
    expect_path("relative/x", "relative/x");
    _cleanup_free_ char *link = xasprintf("%s/etclink", dir);
    cr_assert_eq(symlink("/etc", link), 0);
    _cleanup_free_ char *below = xasprintf("%s/etclink/not-there/x", dir);
    expect_path(link, "/etc");
    expect_path(below, "/etc/not-there/x"); /* the missing tail is kept as written */
}

/* The message of a refused bind, or "ok" (and then the judged path in *judged). */
static char *judge(const dg_exec_policy *p, const char *source, char **judged) {
    _cleanup_error_ dg_error err = {0};
    char *path = NULL;
    if (dg_exec_check_bind(p, source, &path, &err) == 0) {
        if (judged) *judged = path;
        else free(path);
        return xstrdup("ok");
    }
    cr_assert_null(path);
    return xstrdup(err.msg);
}

static void expect_refused(const dg_exec_policy *p, const char *source, const char *part) {
    _cleanup_free_ char *m = judge(p, source, NULL);
    cr_assert(strstr(m, part), "%s: %s (expected '%s')", source, m, part);
}

static void expect_ok(const dg_exec_policy *p, const char *source) {
    _cleanup_free_ char *m = judge(p, source, NULL);
    cr_assert_str_eq(m, "ok", "%s", source);
}

#define SENSITIVE "a sensitive host path; refused by policy unless policy.allowed_sensitive_paths lists it"

Test(policy, sensitive_binds_are_refused_by_default) {
    dg_exec_policy p = {.protected_paths = engine_socket};
    expect_refused(&p, "/etc", "volumes: /etc is " SENSITIVE);
    expect_refused(&p, "/etc/ssl/certs", "volumes: /etc/ssl/certs is under /etc, " SENSITIVE);
    expect_refused(&p, "/var/lib/docker", "is " SENSITIVE);
    expect_refused(&p, "/var/lib/containerd/x", "is under /var/lib/containerd,");
    expect_refused(&p, "/proc", "is " SENSITIVE);
    expect_refused(&p, "/sys/fs/cgroup", "is under /sys,");
    expect_refused(&p, "/dev", "is " SENSITIVE);
    expect_refused(&p, "/var/lib", "holds /var/lib/docker,");
    expect_refused(&p, "/var", "holds ");
    /* other runtimes' sockets, not only Docker's */
    expect_refused(&p, "/run/containerd/containerd.sock", "is under /run/containerd,");
    expect_refused(&p, "/var/run/crio/crio.sock", "crio");
    expect_refused(&p, "/run/podman/podman.sock", "is under /run/podman,");
    /* the engine's own socket and the folders above it keep their own message */
    expect_refused(&p, "/", "gives the container the Docker engine's socket");
    expect_refused(&p, "/run", "gives the container the Docker engine's socket");
    expect_refused(&p, "/run/docker.sock", "(policy.allow_docker_socket)");
    /* spelled another way: .., //, a trailing /, a link */
    expect_refused(&p, "/nonexistent-dagd/../etc/", "(it is /etc on the host)");
    expect_refused(&p, "//etc//passwd", "under /etc,");
    _cleanup_free_ char *link = xasprintf("%s/etclink", dir);
    cr_assert_eq(symlink("/etc", link), 0);
    _cleanup_free_ char *via = xasprintf("%s/", link);
    expect_refused(&p, via, "(it is /etc on the host)");
    _cleanup_free_ char *root = xasprintf("%s/root", dir);
    cr_assert_eq(symlink("/", root), 0);
    _cleanup_free_ char *proc = xasprintf("%s/proc/1", root);
    expect_refused(&p, proc, "under /proc,");
    /* what is not sensitive passes, as its judged path */
    _cleanup_free_ char *data = xasprintf("%s/data/../data2/", dir);
    _cleanup_free_ char *want = xasprintf("%s/data2", dir);
    char *judged = NULL;
    _cleanup_free_ char *m = judge(&p, data, &judged);
    cr_assert_str_eq(m, "ok");
    cr_assert_str_eq(judged, want);
    free(judged);
    expect_ok(&p, "/home/someone/data");
    expect_ok(&p, "/etcetera");
}

Test(policy, allowed_sensitive_paths_allow_that_path_and_below) {
    char *allowed[] = {"/etc/ssl", "/var/run/containerd", NULL};
    dg_exec_policy p = {.protected_paths = engine_socket, .allowed_sensitive_paths = allowed};
    expect_ok(&p, "/etc/ssl");
    expect_ok(&p, "/etc/ssl/certs");
    expect_ok(&p, "/run/containerd/containerd.sock"); /* /var/run is /run, resolved */
    expect_refused(&p, "/etc", "is " SENSITIVE);
    expect_refused(&p, "/var/lib/docker", "is " SENSITIVE);
    expect_refused(&p, "/run", "Docker engine's socket");
    char *all[] = {"/", NULL};
    dg_exec_policy q = {.protected_paths = engine_socket, .allowed_sensitive_paths = all};
    expect_ok(&q, "/etc");
    expect_ok(&q, "/proc");
    expect_refused(&q, "/", "Docker engine's socket"); /* that is allow_docker_socket's */
}

Test(policy, the_engine_socket_is_allow_docker_socket_s) {
    dg_exec_policy p = {.protected_paths = engine_socket, .allow_docker_socket = true};
    expect_ok(&p, "/run/docker.sock");
    expect_ok(&p, "/var/run/docker.sock");
    /* /run holds other runtimes' sockets too */
    expect_refused(&p, "/run", "holds ");
    char *run[] = {"/run", NULL};
    p.allowed_sensitive_paths = run;
    expect_ok(&p, "/run");
}

static void collect(void *ud, const char *msg) { dg_buf_printf(ud, "%s\n", msg); }

static char *refusals(const dg_exec_policy *p, const dg_task *t, size_t *n) {
    dg_buf b = {0};
    dg_buf_puts(&b, "");
    *n = dg_exec_task_refusals(p, t, collect, &b);
    return dg_buf_steal(&b);
}

Test(policy, network_modes_and_privileged) {
    dg_exec_policy p = {0};
    dg_task t = {.privileged = true, .network = "host"};
    size_t n;
    _cleanup_free_ char *m = refusals(&p, &t, &n);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(m, "privileged: true is refused by policy (policy.allow_privileged)\n"
                        "network: host gives the container the host's network stack; refused by policy "
                        "(policy.allow_host_network)\n");
    _cleanup_error_ dg_error err = {0};
    cr_assert_eq(dg_exec_check_task(&p, &t, &err), -EPERM);
    cr_assert_str_eq(err.msg, "privileged: true is refused by policy (policy.allow_privileged)");
    dg_task c = {.network = "container:db"};
    _cleanup_free_ char *m2 = refusals(&p, &c, &n);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(m2, "network: container:db joins another container's network stack; refused by policy "
                         "(policy.allow_container_network)\n");
    dg_task named = {.network = "hostnet"}, plain = {0};
    _cleanup_free_ char *m3 = refusals(&p, &named, &n);
    cr_assert_eq(n, 0);
    _cleanup_free_ char *m4 = refusals(&p, &plain, &n);
    cr_assert_eq(n, 0);
    dg_exec_policy open = {.allow_privileged = true, .allow_host_network = true, .allow_container_network = true};
    _cleanup_free_ char *m5 = refusals(&open, &t, &n);
    cr_assert_eq(n, 0);
    _cleanup_free_ char *m6 = refusals(&open, &c, &n);
    cr_assert_eq(n, 0);
    cr_assert_eq(dg_exec_check_task(&open, &t, NULL), 0);
}
