/* docker/internal — what the docker module's source files share: the client struct
 * and the request object the transport drives. Not part of the public surface.
 *
 * Ownership: a request (dg__req) is reference counted. The client's list of live
 * requests holds one reference, the dispatch queue one more while data waits, and the
 * dispatcher one while it runs user code. User callbacks never run inside libcurl: the
 * transport only buffers bytes and flags requests, and everything else happens after
 * curl_multi_socket_action returns, so callbacks may start, cancel or free anything. */
#pragma once
#include <curl/curl.h>

#include "dagd/docker.h"

typedef struct dg__req dg__req;
typedef struct dg__sock dg__sock;

/* Completion: err is NULL when the transfer worked and status < 400; otherwise it holds
 * Docker's message (status >= 400) or the transport failure (status 0). */
typedef void (*dg__done_fn)(dg__req *r, const dg_error *err);
/* Body bytes of a 2xx/3xx streaming response, in arrival order, outside libcurl. */
typedef void (*dg__data_fn)(dg__req *r, const char *data, size_t len);
/* Headers of the final response arrived (status known). */
typedef void (*dg__headers_fn)(dg__req *r);

enum { REQ_NEW, REQ_WAITING, REQ_ACTIVE, REQ_FAILING, REQ_FINISHED };

struct dg__req {
    dg_docker *d;
    int refs;
    int state;
    bool cancelled;   /* no callback of this request runs any more */
    bool versioned;   /* path gets the /vX.Y prefix */
    bool stream;      /* no total timeout */
    bool headers_done, headers_seen;
    bool queued;      /* on the dispatch queue */
    bool linked;      /* on d->reqs */
    bool capped;      /* body reached max_body and the transfer was stopped on purpose */
    char *method, *path, *req_body;
    CURL *easy;
    struct curl_slist *hdrs;
    long status;
    char api_version[32]; /* Api-Version response header */
    dg_buf body;          /* collected body, or stream bytes not yet dispatched */
    size_t max_body;      /* 0 = unlimited */
    dg_error fail;        /* for REQ_FAILING */
    dg__done_fn on_done;
    dg__data_fn on_data;
    dg__headers_fn on_headers;
    void *ctx;
    char errbuf[CURL_ERROR_SIZE];
    dg__req *prev, *next;   /* d->reqs */
    dg__req *qnext;         /* d->waiting / d->failing / d->dispatch */
};

struct dg_docker {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;      /* libcurl's timeout */
    uv_timer_t defer;      /* runs failures decided synchronously, on the next tick */
    int open_handles;      /* d is freed when both timers closed */
    int in_curl;
    bool closing;
    char *host;            /* as given, for messages */
    dg_docker_endpoint ep;
    char *version;         /* negotiated "1.41", NULL before */
    bool pinging;          /* an implicit negotiation is in flight */
    dg__req *reqs;         /* every live request */
    dg__req *waiting, **waiting_tail; /* versioned requests waiting for negotiation */
    dg__req *failing;      /* requests to fail on the next tick */
    dg__req *dispatch, **dispatch_tail;
    dg__sock *socks;
    dg_docker_stream *streams;
};

/* Streams (logs, events) share this head; kind-specific state follows in their file. */
struct dg_docker_stream {
    dg_docker *d;
    bool cancelled; /* by the owner or by dg_docker_free: no owner callback runs */
    bool finished;  /* unlinked, timer closing; memory goes in the close callback */
    dg__req *req;   /* current transfer (a reference), NULL between reconnects */
    uv_timer_t timer;
    dg_docker_stream *prev, *next;
    void (*on_free)(dg_docker_stream *s); /* releases the kind-specific struct */
};

/* Builds a request; nothing is sent until dg__req_submit. path is relative to the API
 * root (e.g. "/containers/json"); body is a JSON text or NULL. */
dg__req *dg__req_new(dg_docker *d, const char *method, const char *path, const char *body,
                     dg__done_fn on_done, void *ctx);
void dg__req_submit(dg__req *r);
/* Stops the request; none of its callbacks run afterwards. Safe from any callback. */
void dg__req_cancel(dg__req *r);
/* Completes r with an error on the next loop tick (at once while the client is being
 * freed, which runs callbacks synchronously anyway). */
void dg__req_fail_later(dg__req *r, int code, const char *fmt, ...) _printf_(3, 4);
void dg__req_ref(dg__req *r);
void dg__req_unref(dg__req *r);

/* The body collected so far parsed as JSON, or NULL. */
json_t *dg__req_json(dg__req *r);
/* URL-encodes s (query values, path segments). Caller frees. */
char *dg__escape(const char *s);
/* A URL-encoded `filters` value: {"type": [type], "label": labels}, each part only when
 * given (type NULL, labels NULL or empty: left out). Caller frees. */
char *dg__label_filters(const char *type, const char *const *labels);

/* Called by api.c once the version is known (or negotiation failed: err set). */
void dg__version_settled(dg_docker *d, const dg_error *err);
/* Starts an implicit /_ping when needed. */
void dg__negotiate(dg_docker *d);

void dg__transport_init(dg_docker *d);
/* Cancels every request and stream, calling completion callbacks with -ECANCELED. */
void dg__transport_shutdown(dg_docker *d);
/* Registers a stream with the client (and initialises its timer). */
void dg__stream_link(dg_docker *d, dg_docker_stream *s);
/* Ends a stream: cancels its transfer, unlinks it, frees it from the timer's close
 * callback (so it stays valid until the current callback chain returns). Idempotent. */
void dg__stream_finish(dg_docker_stream *s);

int dg__status_errno(long status);
