/* api — the REST API of docs/api.md on libmicrohttpd, driven by the server's libuv loop
 * (MHD's epoll fd on a uv_poll, its timeout on a uv_timer; no threads). Bearer-token auth
 * for everything but /api/v1/health; JSON errors {"error","detail"} with 4xx for bad input;
 * bodies over the cap answer 413; per-address and total connection limits and a deadline
 * for request heads (docs/api.md, "Limits"); log follow streams with suspend/resume. The
 * API borrows the server. */
#pragma once
#include <uv.h>

#include "dagd/config.h"
#include "dagd/server.h"

typedef struct dg_api dg_api;

/* The token clients must present: cfg->token (DAGD_TOKEN), else token_file's first line,
 * else <state_dir>/token, made random (mode 0600) when missing and kept across restarts.
 * *ret_made is set when it was just made. */
int dg_api_token(const dg_config *cfg, char **ret, bool *ret_made, dg_error *err);
/* Listens on cfg->listen ("127.0.0.1:8080", "[::1]:8080", ":8080" = all addresses) with
 * cfg's api limits (docs/api.md, "Limits"). token must be non-empty. */
int dg_api_start(uv_loop_t *loop, dg_server *s, const dg_config *cfg, const char *token, dg_api **ret,
                 dg_error *err);
/* Whether listen is an address dg_api_start can use, without binding it: a bad one is a
 * usage error of `dagd serve`, told before anything starts. */
int dg_api_check_listen(const char *listen, dg_error *err);
/* The port actually bound (useful with port 0 in tests). */
int dg_api_port(const dg_api *a);
void dg_api_stop(dg_api *a); /* closes; memory released from close callbacks */
