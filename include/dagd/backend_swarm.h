/* backend_swarm — the `swarm` backend: every job is a service in replicated-job mode on a
 * Docker Swarm, reached through a manager's engine API (docs/operations.md, "Running on a
 * swarm"). */
#pragma once
#include <uv.h>

#include "dagd/backend.h"
#include "dagd/util.h"

/* host NULL: $DOCKER_HOST, else the local socket; it must be a swarm manager's engine
 * (checked when connecting). log_max_size: the task containers' json-file max-size
 * ("engine" or NULL: the engine's own settings). No I/O happens here. */
int dg_backend_swarm_new(uv_loop_t *loop, const char *host, const char *log_max_size, dg_backend **ret,
                         dg_error *err);
