/* backend_local — the `local` backend: every job is a container on one Docker engine,
 * reached through the engine client (docs/architecture.md, "The backend seam"). */
#pragma once
#include <uv.h>

#include "dagd/backend.h"
#include "dagd/util.h"

/* host NULL: $DOCKER_HOST, else the local socket. log_max_size: the json-file max-size
 * every container gets ("100m"), NULL or "engine" = the engine's own log settings
 * (docs/daemon.md, container_log_max_size). No I/O happens here. */
int dg_backend_local_new(uv_loop_t *loop, const char *host, const char *log_max_size, dg_backend **ret,
                         dg_error *err);
