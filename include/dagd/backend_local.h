/* backend_local — the `local` backend: every job is a container on one Docker engine,
 * reached through the engine client (docs/architecture.md, "The backend seam"). */
#pragma once
#include <uv.h>

#include "dagd/backend.h"
#include "dagd/util.h"

/* host NULL: $DOCKER_HOST, else the local socket. No I/O happens here. */
int dg_backend_local_new(uv_loop_t *loop, const char *host, dg_backend **ret, dg_error *err);
