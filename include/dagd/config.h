/* config — dagd's configuration (docs/daemon.md, "Configuration"): a dagd.yml file, then
 * every key overridden by DAGD_<KEY> from the environment (nested keys joined by '_':
 * DAGD_SMTP_URL, DAGD_POLICY_ALLOW_PRIVILEGED,
 * DAGD_API_MAX_CONNECTIONS_PER_ADDRESS; pools as DAGD_POOLS="name=slots,..."), then
 * command-line flags (set by the caller on the loaded struct). Connections come from the
 * connections file and DAGD_CONN_<ID> variables (these win). This is the one place that
 * reads dagd's settings from the environment; everything else gets them passed in.
 * The struct owns its strings; dg_config_free releases them. */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "dagd/util.h"

typedef struct dg_config_pool {
    char *name;
    int slots;
} dg_config_pool;

typedef struct dg_config {
    char *dags_folder;  /* default ./dags */
    char *state_dir;    /* default $STATE_DIRECTORY, else $XDG_STATE_HOME/dagd, else ~/.local/state/dagd */
    char *listen;       /* default 127.0.0.1:8080 */
    char *token_file;   /* default <state_dir>/token */
    char *token;        /* DAGD_TOKEN (environment only); NULL = from token_file */
    int parallelism;    /* default 32 */
    dg_config_pool *pools;
    size_t n_pools;
    char *backend;      /* local | swarm */
    char *docker_host;  /* NULL = $DOCKER_HOST or the local socket */
    char *container_log_max_size; /* json-file max-size of task containers, default "1g";
                                   * "engine" = the engine's own log settings */
    char *smtp_url, *smtp_from, *smtp_user, *smtp_password;
    char *connections_file;
    json_t *connections; /* {dg_conn_id(id): URI}, never NULL after load */
    bool allow_privileged, allow_docker_socket;
    bool allow_host_network, allow_container_network;
    char **allowed_volume_prefixes; /* NULL-terminated, NULL = any */
    char **allowed_sensitive_paths; /* NULL-terminated, NULL = none */
    char *log;          /* auto | journald | stderr */
    /* api: see docs/api.md, "Limits" */
    int api_max_connections;             /* default 1024 (lowered to fit the descriptor limit) */
    int api_max_connections_per_address; /* default 64 */
    int api_request_head_timeout;        /* seconds, default 10 */
} dg_config;

/* file may be NULL (defaults + environment only). Unknown keys are errors with a suggestion;
 * so is a connections file that others can read or that is not a mapping of id to URI. */
int dg_config_load(const char *file, dg_config *ret, dg_error *err);
void dg_config_free(dg_config *c);
/* dst becomes an independent copy of src (free both). */
void dg_config_copy(dg_config *dst, const dg_config *src);
/* Replace c's pools with copies of pools[0..n). */
void dg_config_set_pools(dg_config *c, const dg_config_pool *pools, size_t n);
char *dg_config_default_state_dir(void);
