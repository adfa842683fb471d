/* docker/events — the engine's container event stream (GET /events), filtered by type
 * and labels, delivered one JSON object at a time. The stream never ends on its own:
 * when the connection drops it reconnects after a backoff (100 ms doubling to 5 s) with
 * since= a little before the newest event seen, and tells the owner through `connected`
 * so it can reconcile (the engine only keeps the last 256 events).
 *
 * The engine stamps an event when it happens and publishes it a little later, so the
 * stream is not ordered by timeNano (a `create` of one container may come after the `die`
 * of another that it precedes). Every event is delivered once: a reconnect asks from
 * RESUME_SLACK_NS before the newest event seen, and the events delivered recently are
 * remembered (by time, action and container) to drop the ones the engine sends again. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "internal.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define RESUME_SLACK_NS 1000000000LL
#define SEEN_MAX 512 /* events remembered for the de-duplication after a reconnect */

typedef struct events_stream {
    dg_docker_stream s; /* first: the client sees only this */
    char *filters;      /* URL-encoded filter JSON */
    dg_docker_event_cb on_event;
    dg_docker_done_cb connected;
    void *ud;
    dg_buf partial;
    int64_t last_ns;    /* newest timeNano delivered, 0 = none yet */
    uint64_t seen[SEEN_MAX]; /* keys of the events delivered last (a ring) */
    size_t n_seen;
    int64_t connected_ns; /* where to resume when no event came yet (with the slack) */
    uint64_t backoff_ms;
    bool failing;       /* a failure was reported and no connect succeeded since */
} events_stream;

static void events_free(dg_docker_stream *s) {
    events_stream *e = (events_stream *)s;
    free(e->filters);
    dg_buf_free(&e->partial);
    free(e);
}

static void connect_now(events_stream *e);

static void on_backoff(uv_timer_t *t) { connect_now((events_stream *)t->data); }

static bool alive(events_stream *e) { return !e->s.cancelled && !e->s.finished; }

/* FNV-1a over what tells one event from another. */
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

static uint64_t event_key(json_t *j, int64_t ns) {
    uint64_t h = fnv(14695981039346656037ULL, &ns, sizeof ns);
    const char *action = json_string_value(json_object_get(j, "Action"));
    const char *id = json_string_value(json_object_get(json_object_get(j, "Actor"), "ID"));
    if (action) h = fnv(h, action, strlen(action) + 1);
    if (id) h = fnv(h, id, strlen(id) + 1);
    return h;
}

static void deliver(events_stream *e, const char *line, size_t len) {
    while (len > 0 && (line[len - 1] == '\r' || line[0] == ' ')) {
        if (line[len - 1] == '\r') len--;
        else line++, len--;
    }
    if (len == 0) return;
    json_t *j = json_loadb(line, len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return;
    }
    json_t *tn = json_object_get(j, "timeNano");
    int64_t ns = json_is_integer(tn) ? (int64_t)json_integer_value(tn) : 0;
    uint64_t key = event_key(j, ns);
    size_t n = e->n_seen < SEEN_MAX ? e->n_seen : SEEN_MAX;
    for (size_t i = 0; i < n; i++)
        if (e->seen[i] == key) {
            json_decref(j);
            return;
        }
    e->seen[e->n_seen++ % SEEN_MAX] = key;
    if (ns > e->last_ns) e->last_ns = ns;
    e->on_event(e->ud, j);
    json_decref(j);
}

static void events_data(dg__req *r, const char *data, size_t len) {
    events_stream *e = r->ctx;
    dg_buf_append(&e->partial, data, len);
    size_t start = 0;
    char *nl;
    while (alive(e) &&
           (nl = memchr(e->partial.data + start, '\n', e->partial.len - start))) {
        size_t n = (size_t)(nl - (e->partial.data + start));
        /* Deliver from a copy: the owner may cancel us, and partial is ours to reshape. */
        _cleanup_free_ char *line = xstrndup(e->partial.data + start, n);
        start += n + 1;
        deliver(e, line, n);
    }
    dg_buf_consume(&e->partial, start);
}

static void events_headers(dg__req *r) {
    events_stream *e = r->ctx;
    if (r->status != 200) return;
    e->backoff_ms = BACKOFF_MIN_MS;
    e->failing = false;
    if (!e->last_ns) e->connected_ns = (int64_t)dg_now_ms() * 1000000 - RESUME_SLACK_NS;
    if (e->connected) e->connected(e->ud, NULL);
}

static void events_done(dg__req *r, const dg_error *err) {
    events_stream *e = r->ctx;
    if (e->s.req == r) {
        e->s.req = NULL;
        dg__req_unref(r);
    }
    if (!alive(e) || r->d->closing) return;
    dg_buf_consume(&e->partial, e->partial.len);
    if (err && !e->failing) {
        e->failing = true;
        if (e->connected) e->connected(e->ud, err);
        if (!alive(e)) return;
    }
    uv_timer_start(&e->s.timer, on_backoff, e->backoff_ms, 0);
    e->backoff_ms = e->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : e->backoff_ms * 2;
}

static void connect_now(events_stream *e) {
    if (!alive(e)) return;
    _cleanup_free_ char *path = NULL;
    int64_t since = e->last_ns ? e->last_ns - RESUME_SLACK_NS : e->connected_ns;
    if (since > 0)
        path = xasprintf("/events?filters=%s&since=%" PRId64 ".%09" PRId64, e->filters,
                         since / 1000000000, since % 1000000000);
    else
        path = xasprintf("/events?filters=%s", e->filters);
    dg__req *r = dg__req_new(e->s.d, "GET", path, NULL, events_done, e);
    r->stream = true;
    r->on_data = events_data;
    r->on_headers = events_headers;
    e->s.req = r;
    dg__req_ref(r);
    dg__req_submit(r);
}

dg_docker_stream *dg_docker_events(dg_docker *d, const char *const *labels,
                                   dg_docker_event_cb on_event, dg_docker_done_cb connected,
                                   void *ud) {
    events_stream *e = xcalloc(1, sizeof *e);
    e->on_event = on_event;
    e->connected = connected;
    e->ud = ud;
    e->backoff_ms = BACKOFF_MIN_MS;
    e->s.on_free = events_free;
    e->filters = dg__label_filters("container", labels);
    dg__stream_link(d, &e->s);
    connect_now(e);
    return &e->s;
}
