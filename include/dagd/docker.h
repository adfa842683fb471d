/* docker — an asynchronous Docker Engine API client on a libuv loop (docs/daemon.md).
 * libcurl multi driven by uv_poll + uv_timer; unix:// or tcp:// (TLS from
 * DOCKER_TLS_VERIFY / DOCKER_CERT_PATH); API version negotiated via /_ping (floor 1.41).
 * Every call completes through its callback, on the loop, exactly once (also when the
 * client is freed: then err->code is -ECANCELED). Errors carry Docker's own message.
 * The client owns its transfers and streams; callers own nothing inside it. */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "dagd/util.h"

#define DG_DOCKER_API_FLOOR "1.41"
#define DG_DOCKER_API_MAX "1.45"

typedef struct dg_docker dg_docker;
typedef struct dg_docker_stream dg_docker_stream;

/* host NULL: $DOCKER_HOST, else unix:///var/run/docker.sock. No I/O happens here. */
int dg_docker_new(uv_loop_t *loop, const char *host, dg_docker **ret, dg_error *err);
/* Cancels everything in flight (callbacks run with -ECANCELED), closes handles; memory
 * is released from close callbacks, so run the loop afterwards. NULL is fine. */
void dg_docker_free(dg_docker *d);
const char *dg_docker_api_version(const dg_docker *d); /* NULL before negotiation */
const char *dg_docker_unix_path(const dg_docker *d);   /* the engine's socket; NULL over tcp */

/* Generic call. status = HTTP status (0 on transport failure). For status >= 400 (or
 * transport failure) err is set with Docker's {"message"} text and the body may be NULL.
 * body is parsed JSON when the response is JSON, else NULL. Pointers live for the callback. */
typedef void (*dg_docker_cb)(void *ud, int status, json_t *body, const dg_error *err);
/* method "GET"/"POST"/"DELETE"; path like "/containers/json?all=1" (version prefix is added
 * after negotiation); req may be NULL; it is borrowed (serialised before return). */
void dg_docker_call(dg_docker *d, const char *method, const char *path, const json_t *req,
                    dg_docker_cb cb, void *ud);

/* Negotiates the API version; status is 0 ok, else err says why (unreachable, too old). */
typedef void (*dg_docker_done_cb)(void *ud, const dg_error *err); /* err NULL on success */
void dg_docker_ping(dg_docker *d, dg_docker_done_cb cb, void *ud);
/* Negotiation is also implicit: versioned calls made before it finished wait, and the
 * first of them starts GET /_ping. If negotiation fails, every waiting call fails with
 * its error (status 0) and the next call tries again. Callbacks never run synchronously
 * inside the call that started them, except during dg_docker_free. */

/* Make `image` usable per policy: "missing" pulls if absent, "always" pulls, "never"
 * fails if absent. Pull errors are read out of the progress stream. */
typedef enum { DG_DOCKER_PULL_MISSING = 0, DG_DOCKER_PULL_ALWAYS, DG_DOCKER_PULL_NEVER } dg_docker_pull;
void dg_docker_image_ensure(dg_docker *d, const char *image, dg_docker_pull pull_policy,
                            dg_docker_done_cb cb, void *ud);

/* Create a bridge network named `name` with our label when it does not exist. */
void dg_docker_network_ensure(dg_docker *d, const char *name, dg_docker_done_cb cb, void *ud);
/* The same for a swarm: an attachable overlay network; one of that name with another
 * driver is an error. */
void dg_docker_overlay_ensure(dg_docker *d, const char *name, dg_docker_done_cb cb, void *ud);
/* A "filters" query value (JSON, URL-escaped): {key: values}, e.g. "label" with
 * "key=value" strings (objects carrying every one), "service" with ids (tasks of any).
 * Caller frees. */
char *dg_docker_filters(const char *key, const char *const *values);

/* POST /containers/create?name=NAME with config (borrowed). id is valid for the callback. */
typedef void (*dg_docker_id_cb)(void *ud, const char *id, const dg_error *err);
void dg_docker_container_create(dg_docker *d, const char *name, const json_t *config,
                                dg_docker_id_cb cb, void *ud);
void dg_docker_container_start(dg_docker *d, const char *id, dg_docker_done_cb cb, void *ud);
/* SIGTERM, then SIGKILL after grace_s; an already stopped container is success. */
void dg_docker_container_stop(dg_docker *d, const char *id, int grace_s, dg_docker_done_cb cb,
                              void *ud);
/* DELETE with force and v; a container already gone is success. */
void dg_docker_container_remove(dg_docker *d, const char *id, dg_docker_done_cb cb, void *ud);
void dg_docker_container_inspect(dg_docker *d, const char *id, dg_docker_cb cb, void *ud);
/* GET /images/IMAGE/json (a name or an id): Id, RepoDigests... */
void dg_docker_image_inspect(dg_docker *d, const char *image, dg_docker_cb cb, void *ud);
/* Every container (running or not) that carries all of labels ("key=value"): the body is
 * GET /containers/json's array. */
void dg_docker_containers_labelled(dg_docker *d, const char *const *labels, dg_docker_cb cb, void *ud);

/* Read one file out of a (stopped) container through the archive endpoint (a tar).
 * content is NUL-terminated, at most max_bytes (longer files are cut, truncated=true). */
typedef void (*dg_docker_file_cb)(void *ud, const char *content, size_t len, bool truncated,
                                  const dg_error *err);
void dg_docker_archive_file(dg_docker *d, const char *id, const char *path, size_t max_bytes,
                            dg_docker_file_cb cb, void *ud);

/* Follow a container's logs from its first line (follow=1, since=0, stdout+stderr,
 * timestamps), demultiplexed and split into lines. stream: 1 stdout, 2 stderr, or
 * DG_DOCKER_GAP with line DG_LOG_GAP_MARK where lines were lost (the engine rotated its
 * log past what had been read). line excludes the '\n'; a final unterminated line is
 * delivered at end. done is called once when the stream ends (container stopped) or
 * fails or is cancelled. A broken connection is resumed, with a backoff, for up to ten
 * minutes (docs/operations.md, Logs). */
#define DG_DOCKER_GAP 9
#define DG_LOG_GAP_MARK \
    "[dagd] lines are missing here: the engine's log was rotated before dagd read them (count unknown)"
typedef void (*dg_docker_line_cb)(void *ud, int stream, const char *line, size_t len);
dg_docker_stream *dg_docker_logs_follow(dg_docker *d, const char *id, dg_docker_line_cb line_cb,
                                        dg_docker_done_cb done, void *ud);
/* When the follow ends cleanly, the log is read once more without follow from just
 * before the last frame seen (frames already delivered are skipped), because the engine
 * may end a follow before sending the container's last message. The stream is freed
 * once done has run: do not cancel it after that. dg_docker_free runs done with
 * -ECANCELED. Needs a container created with Tty: false (else done gets -EPROTO). */

/* The same for a Swarm service's tasks (GET /services/{id}/logs). The follow does not
 * end when the service's task does: call dg_docker_logs_exited once the task has ended. */
dg_docker_stream *dg_docker_service_logs_follow(dg_docker *d, const char *id, dg_docker_line_cb line_cb,
                                                dg_docker_done_cb done, void *ud);

/* The container of a logs stream has exited (its `die` event came): finish the stream with
 * one plain read of what is left instead of waiting for the follow to end. */
void dg_docker_logs_exited(dg_docker_stream *s);

/* Subscribe to container events matching labels (e.g. "io.dagd.instance=abc"), NULL-terminated.
 * Reconnects by itself with since=<last timeNano> and a backoff; after every (re)connect
 * `connected` is called so the owner can reconcile by listing/inspecting. event is the raw
 * JSON object ({Type, Action, Actor{ID, Attributes}, time, timeNano}). */
typedef void (*dg_docker_event_cb)(void *ud, json_t *event);
dg_docker_stream *dg_docker_events(dg_docker *d, const char *const *labels,
                                   dg_docker_event_cb on_event, dg_docker_done_cb connected,
                                   void *ud);
/* connected(NULL) follows each 200 answer; connected(err) is called once per run of
 * failed attempts (engine unreachable, HTTP error) while retrying goes on. Events whose
 * timeNano is not newer than the last one delivered are dropped (since= repeats it). */

/* Stop following; the stream's done callback (if any) is NOT called after this. */
void dg_docker_stream_cancel(dg_docker_stream *s);
/* Safe inside the stream's own callbacks; nothing of the stream runs afterwards. */

/* --- pure helpers, unit-tested without an engine --- */

/* The log multiplexing of non-TTY containers: 8-byte headers [type,0,0,0,size BE] then
 * payload; reads may split anywhere. */
typedef struct dg_demux {
    unsigned char hdr[8];
    size_t hdr_len;
    uint32_t remaining;
    int stream;
} dg_demux;
typedef void (*dg_demux_cb)(void *ud, int stream, const char *data, size_t len);
/* Returns 0, or -EPROTO for a header that is not a frame header. Payload of type 3
 * (a daemon error) is delivered with stream 3. */
int dg_demux_feed(dg_demux *dm, const char *data, size_t len, dg_demux_cb cb, void *ud);

/* Per-stream partial-line buffers turning chunks into lines. A line longer than
 * DG_LINE_MAX is handed over in pieces of at most DG_LINE_MAX bytes (cut between UTF-8
 * characters), each piece but the last followed by the line DG_LINE_SPLIT_MARK on the
 * same stream, so a buffer never grows beyond DG_LINE_MAX (docs/operations.md, Logs). */
#define DG_LINE_MAX (1024 * 1024)
#define DG_LINE_SPLIT_MARK "[dagd] the line above continues on the next line (split at 1 MiB)"
typedef struct dg_lines {
    dg_buf partial[4];
} dg_lines;
void dg_lines_feed(dg_lines *l, int stream, const char *data, size_t len, dg_docker_line_cb cb,
                   void *ud);
void dg_lines_flush(dg_lines *l, dg_docker_line_cb cb, void *ud); /* unterminated tails */
void dg_lines_free(dg_lines *l);

/* "unix:///path" / "tcp://host:port" / "http(s)://..." → what curl needs. */
typedef struct dg_docker_endpoint {
    char *unix_path; /* NULL for tcp */
    char *base_url;  /* "http://localhost" for unix, "http(s)://host:port" for tcp */
    bool tls;
    char *ca, *cert, *key; /* from DOCKER_CERT_PATH when TLS */
} dg_docker_endpoint;
int dg_docker_parse_host(const char *host, dg_docker_endpoint *ret, dg_error *err);
void dg_docker_endpoint_free(dg_docker_endpoint *e);
/* Where an engine's socket is on this host, resolved (/var/run is a link to /run on most
 * hosts): the usual place and the unix socket of host (NULL: $DOCKER_HOST), for a policy
 * that keeps binds away from it. NULL-terminated; caller frees with dg_strv_free. */
char **dg_docker_socket_paths(const char *host);

/* Splits an image reference the way POST /images/create wants it: repo keeps any
 * registry host:port ("reg:5000/a/b"), tag is the tag, the digest ("sha256:…") when
 * there is one, else "latest". Caller frees both. */
void dg_docker_image_split(const char *image, char **ret_repo, char **ret_tag);
