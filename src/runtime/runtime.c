/* runtime — the working parts from a configuration (see include/dagd/runtime.h). */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "dagd/backend_local.h"
#include "dagd/backend_swarm.h"
#include "dagd/log.h"
#include "dagd/runtime.h"

/* The backends this build has, by their `backend:` name. */
static const struct {
    const char *name;
    int (*make)(uv_loop_t *loop, const char *host, const char *log_max_size, dg_backend **ret, dg_error *err);
} backends[] = {
    {"local", dg_backend_local_new},
    {"swarm", dg_backend_swarm_new},
};

static int make_backend(uv_loop_t *loop, const dg_config *cfg, dg_backend **ret, dg_error *err) {
    const char *name = cfg->backend ? cfg->backend : "local";
    for (size_t i = 0; i < ARRAY_SIZE(backends); i++)
        if (!strcmp(backends[i].name, name))
            return backends[i].make(loop, cfg->docker_host, cfg->container_log_max_size, ret, err);
    return dg_error_set(err, -EINVAL, "backend '%s' is unknown; the backends are: local, swarm", name);
}

static dg_sched_opts sched_opts(const dg_config *cfg, dg_pool_limit **ret_pools) {
    dg_pool_limit *pools = xcalloc(cfg->n_pools + 1, sizeof *pools);
    for (size_t i = 0; i < cfg->n_pools; i++) pools[i] = (dg_pool_limit){cfg->pools[i].name, cfg->pools[i].slots};
    *ret_pools = pools;
    return (dg_sched_opts){.parallelism = cfg->parallelism, .pools = pools, .n_pools = cfg->n_pools};
}

int dg_runtime_new(uv_loop_t *loop, const dg_config *cfg, const dg_runtime_opts *opts, dg_runtime **ret,
                   dg_error *err) {
    dg_runtime *rt = xcalloc(1, sizeof *rt);
    rt->loop = loop;
    dg_config_copy(&rt->cfg, cfg);
    int r;
    /* before the first goto: its cleanup runs on every way out */
    _cleanup_free_ dg_pool_limit *pools = NULL;
    if (opts->keep_state) {
        if ((r = dg_store_open(rt->cfg.state_dir, &rt->store, err)) < 0) goto fail;
        struct stat st;
        if (stat(rt->cfg.state_dir, &st) == 0 && (st.st_mode & 077))
            dg_log(DG_LOG_WARNING, NULL,
                   "the state directory %s can be read by others (mode %03o); it holds run confs, task outputs "
                   "and logs: chmod 700 it",
                   rt->cfg.state_dir, (unsigned)(st.st_mode & 0777));
    }
    if ((r = make_backend(loop, &rt->cfg, &rt->backend, err)) < 0) goto fail;
    dg_sched_opts so = sched_opts(&rt->cfg, &pools);
    rt->sched = dg_sched_new(&so);
    dg_exec_opts xo = {
        .loop = loop,
        .backend = rt->backend,
        .sched = rt->sched,
        .store = rt->store,
        .state_dir = rt->store ? rt->cfg.state_dir : NULL,
        .policy = dg_runtime_policy(&rt->cfg, dg_backend_protected_paths(rt->backend)),
        .connections = rt->cfg.connections,
        .smtp = {rt->cfg.smtp_url, rt->cfg.smtp_from, rt->cfg.smtp_user, rt->cfg.smtp_password},
        .instance = opts->instance,
        .hooks = opts->hooks,
    };
    rt->exec = dg_exec_new(&xo);
    *ret = rt;
    return 0;
fail:
    dg_runtime_close(rt);
    dg_runtime_free(rt);
    return r;
}

void dg_runtime_set_limits(dg_runtime *rt, const dg_config *cfg) {
    rt->cfg.parallelism = cfg->parallelism;
    dg_config_set_pools(&rt->cfg, cfg->pools, cfg->n_pools);
    _cleanup_free_ dg_pool_limit *pools = NULL;
    dg_sched_opts so = sched_opts(&rt->cfg, &pools);
    dg_sched_set_limits(rt->sched, so.parallelism, so.pools, so.n_pools);
}

void dg_runtime_close(dg_runtime *rt) {
    if (!rt) return;
    dg_exec_free(rt->exec);
    rt->exec = NULL;
    dg_backend_free(rt->backend);
    rt->backend = NULL;
}

void dg_runtime_free(dg_runtime *rt) {
    if (!rt) return;
    dg_runtime_close(rt);
    dg_sched_free(rt->sched);
    dg_store_close(rt->store);
    dg_config_free(&rt->cfg);
    free(rt);
}
