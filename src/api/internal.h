/* api internals shared by api.c (daemon, loop glue, request plumbing, replies), routes.c
 * (paths, auth, handlers) and logs.c (log files, follow streams). A dg_api owns the MHD
 * daemon, its poll and timer handles and the list of live follow streams; each request's
 * dg__api_req is owned by MHD's connection (freed in the completed callback); each
 * stream is owned by its MHD response (freed from the response's free callback). */
#pragma once
#include <jansson.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "dagd/api.h"
#include "dagd/util.h"

#define DG_API_BODY_MAX (1024 * 1024)
#define DG_API_LOG_POLL_MS 200

#define DG_API_SESSION_MAX 256
#define DG_API_SESSION_TTL_MS (12 * 3600 * 1000LL)
#define DG_API_SESSION_HEX 64 /* 32 random bytes in hex */

typedef struct dg__api_stream dg__api_stream;

/* One open connection while a request head is awaited on it (see docs/api.md, "Limits"):
 * from the accept, and again from the end of each request, until the head is in. Owned by
 * MHD's connection as its socket context (made and freed in the notify-connection
 * callback); linked into dg_api's waiting list, oldest first, while waiting. */
typedef struct dg__api_conn {
    struct MHD_Connection *conn;
    uint64_t since; /* uv_now when the wait began */
    bool waiting;
    struct dg__api_conn *prev, *next;
} dg__api_conn;

/* A web UI session (session.c); a slot whose expires_ms has passed is free. */
typedef struct dg__api_session {
    char id[DG_API_SESSION_HEX + 1];
    char csrf[DG_API_SESSION_HEX + 1];
    int64_t expires_ms;
} dg__api_session;

struct dg_api {
    uv_loop_t *loop;
    dg_server *server;
    struct MHD_Daemon *mhd;
    int port;
    char *token;
    size_t token_len;
    uv_poll_t poll;
    uv_timer_t timer;
    uv_timer_t head_timer; /* fires at the oldest waiting head's deadline */
    uint64_t head_timeout_ms;
    dg__api_conn *waiting_first, *waiting_last;
    int open_handles; /* freed when this reaches zero after stop */
    bool stopping;
    dg__api_stream *streams;
    dg__api_session sessions[DG_API_SESSION_MAX];
};

/* Path parameters, percent-decoded. */
enum { DG_API_P_DAG, DG_API_P_RUN, DG_API_P_TASK, DG_API_P_TRY, DG_API_P_MAX };

typedef struct dg__api_req {
    const struct dg__api_route *route;
    char *param[DG_API_P_MAX];
    dg_buf body;
    bool headers_seen; /* the first access-handler call (headers only) is done */
    bool answered;     /* a response was queued early; ignore the rest */
    bool too_large;    /* the body went over the cap; it is being dropped */
    size_t dropped;
} dg__api_req;

typedef enum MHD_Result (*dg__api_handler)(dg_api *a, struct MHD_Connection *c, dg__api_req *r);

/* api.c: replies. Each returns what the access handler should return. */
enum MHD_Result dg__api_reply(struct MHD_Connection *c, unsigned status, const char *ctype, char *data,
                              size_t len);
enum MHD_Result dg__api_reply_json(struct MHD_Connection *c, unsigned status, json_t *body);
enum MHD_Result dg__api_reply_error(struct MHD_Connection *c, unsigned status, const char *detail_fmt, ...)
    _printf_(3, 4);
/* A negative errno from the server → its status (see server.h); detail from err. */
enum MHD_Result dg__api_reply_errno(struct MHD_Connection *c, int rc, const dg_error *err);
/* Re-runs MHD and re-arms the timer; after a resume. */
void dg__api_kick(dg_api *a);

/* routes.c */
/* Finds the route for url and fills r->route and r->param. Returns 0, or the status to
 * answer (404, 400) with *ret_detail set. */
int dg__api_route(const char *url, dg__api_req *r, const char **ret_detail);
/* "GET, PATCH" for the route. */
const char *dg__api_route_allow(const struct dg__api_route *route);
dg__api_handler dg__api_route_handler(const struct dg__api_route *route, const char *method);
bool dg__api_route_public(const struct dg__api_route *route);
bool dg__api_token_ok(const dg_api *a, struct MHD_Connection *c);
/* A method that changes state (anything but GET and HEAD) needs the CSRF token when the
 * request is authenticated by a session cookie. */
bool dg__api_method_changes_state(const char *method);
/* Decodes %XX in place ('+' stays literal); false when the result would hold a NUL. */
bool dg__api_unescape(char *s);

/* logs.c */
enum MHD_Result dg__api_serve_log(dg_api *a, struct MHD_Connection *c, const char *dag, const char *run,
                                  const char *task, int try_number, bool follow, bool header);
/* Ends every follow stream (used by stop, before MHD_stop_daemon). */
void dg__api_streams_abort(dg_api *a);

/* session.c: the web UI's sign-in sessions (docs/ui.md, Sessions). */
/* Compares in time that depends only on blen (the expected value's length). */
bool dg__api_const_eq(const char *a, size_t alen, const char *b, size_t blen);
/* A new session (the oldest gives way when the table is full); NULL when the kernel gave
 * no random bytes. */
dg__api_session *dg__api_session_new(dg_api *a);
/* The live session the request's cookie names, or NULL. */
dg__api_session *dg__api_session_find(dg_api *a, struct MHD_Connection *c);
/* Whether the X-CSRF-Token header holds the session's CSRF token. */
bool dg__api_session_csrf_ok(const dg__api_session *s, struct MHD_Connection *c);
void dg__api_session_end(dg__api_session *s);
/* The Set-Cookie value that hands s to the browser, or (s NULL) that removes it. */
char *dg__api_session_cookie(const dg__api_session *s);

/* ui.c: the embedded web UI files */
enum MHD_Result dg__api_ui_root(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
enum MHD_Result dg__api_ui_index(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
enum MHD_Result dg__api_ui_js(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
enum MHD_Result dg__api_ui_css(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
