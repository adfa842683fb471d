/* backend — what the executor asks of the place where a try's command runs, and nothing
 * of how (docs/architecture.md, "The backend seam"). A backend makes a job (a container on
 * one engine for `local`; a service for a cluster backend) from a rendered spec, starts it,
 * follows its output from the first line, learns its exit, reads a file out of it, stops
 * and removes it, and after a restart lists its jobs by label so they can be re-adopted.
 *
 * The executor sits above and knows only this header; the runtime picks an implementation
 * (`backend:` in the configuration). A backend reports through the callbacks given with
 * each job, never by calling the executor.
 *
 * Ownership: a dg_job belongs to the backend. The caller holds it from create/adopt until
 * dg_job_release; after release no event of that job is delivered, whatever was in flight
 * (the backend finishes or undoes in-flight work by itself, e.g. removes a container whose
 * create answered after the release), and release's `gone` callback says when the job has
 * left the engine. Events never run inside the call that caused them. Freeing the backend
 * ends every job; `gone` callbacks still pending run then. */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "dagd/util.h"

typedef struct dg_backend dg_backend;
typedef struct dg_job dg_job;

typedef enum { DG_JOB_PULL_MISSING = 0, DG_JOB_PULL_ALWAYS, DG_JOB_PULL_NEVER } dg_job_pull;

/* One try's work, rendered: no templates left, policy already applied. Borrowed by create. */
typedef struct dg_job_spec {
    const char *name;          /* unique per try */
    const char *image;
    dg_job_pull pull;
    char *const *command;      /* NULL-terminated; NULL = the image's default */
    char *const *entrypoint;
    char *const *env;          /* "KEY=value", NULL-terminated */
    const json_t *labels;      /* object of strings, including the io.dagd.* ones */
    const char *working_dir, *user, *hostname;
    const char *network;       /* NULL = the backend's default */
    const char *network_alias; /* the name other jobs on the network reach it by */
    char *const *binds;        /* "host:container[:mode]" */
    char *const *volumes;      /* anonymous volumes: container paths */
    char *const *extra_hosts;  /* "name:address" */
    char *const *constraints;  /* placement on a cluster ("node.hostname==a"); one host ignores it */
    char *const *preferences;  /* "spread=node.labels.zone" */
    double cpus;               /* 0 = unlimited */
    int64_t memory, shm_size;  /* bytes, 0 = unset */
    bool privileged;
} dg_job_spec;

/* What a backend reports about one job; ud is the one given with the job. */
typedef struct dg_job_events {
    /* create finished: the job exists and can be started, or err says why it cannot be
     * made (bad image, engine refused...) and the job is dead (release it). */
    void (*created)(void *ud, const dg_error *err);
    /* start finished: the command runs, or err says why not (release the job); err->code
     * -ENOENT: the job is gone (removed before it started) */
    void (*started)(void *ud, const dg_error *err);
    /* one line of output; stream 1 stdout, 2 stderr (a log stream that broke says so on 2) */
    void (*line)(void *ud, int stream, const char *line, size_t len);
    /* the command ended and every line of its output was delivered; vanished: the job
     * disappeared (removed outside dagd) and exit_code means nothing. Once per job. */
    void (*exited)(void *ud, int exit_code, bool vanished);
} dg_job_events;

/* A job found by dg_backend_list. */
typedef struct dg_job_info {
    char *id, *name;
    bool started;  /* the command was started (running or ended); false: created only */
    json_t *labels;
} dg_job_info;
void dg_job_infos_free(dg_job_info *v, size_t n);

typedef void (*dg_backend_done_cb)(void *ud, const dg_error *err);
typedef void (*dg_backend_list_cb)(void *ud, dg_job_info *jobs, size_t n, const dg_error *err);
typedef void (*dg_job_file_cb)(void *ud, const char *content, size_t len, const dg_error *err);

typedef struct dg_backend_ops {
    const char *name;
    /* Reach the engine and follow the exits of jobs carrying every label of labels. */
    void (*connect)(dg_backend *b, const char *const *labels, dg_backend_done_cb cb, void *ud);
    dg_job *(*create)(dg_backend *b, const dg_job_spec *spec, const dg_job_events *ev, void *ud);
    const char *(*id)(dg_job *j);
    void (*image)(dg_job *j, const char **id, const char **digest); /* NULL: never known */
    void (*start)(dg_job *j);
    void (*stop)(dg_job *j, int grace_s);
    void (*read_file)(dg_job *j, const char *path, size_t max_bytes, dg_job_file_cb cb, void *ud);
    void (*release)(dg_job *j, bool remove, dg_backend_done_cb gone, void *ud);
    void (*list)(dg_backend *b, const char *const *labels, dg_backend_list_cb cb, void *ud);
    dg_job *(*adopt)(dg_backend *b, const dg_job_info *info, const dg_job_events *ev, void *ud);
    void (*remove)(dg_backend *b, const char *id);
    const char *const *(*protected_paths)(dg_backend *b);
    const char *(*describe)(dg_backend *b);
    void (*free)(dg_backend *b);
} dg_backend_ops;

/* Every backend's handle starts with this, and every job with a dg_job. */
struct dg_backend {
    const dg_backend_ops *ops;
};
struct dg_job {
    dg_backend *backend;
};

/* The calls, each through the backend's ops. */
static inline const char *dg_backend_name(dg_backend *b) { return b->ops->name; }
/* cb(NULL) once the backend can run jobs and follows exits; cb(err) when it cannot. */
static inline void dg_backend_connect(dg_backend *b, const char *const *labels, dg_backend_done_cb cb, void *ud) {
    b->ops->connect(b, labels, cb, ud);
}
/* Make the image and network ready and create the job (not started): events->created. */
static inline dg_job *dg_job_create(dg_backend *b, const dg_job_spec *spec, const dg_job_events *ev, void *ud) {
    return b->ops->create(b, spec, ev, ud);
}
/* The job's id in the backend (a container id), NULL until it is created. */
static inline const char *dg_job_id(dg_job *j) { return j->backend->ops->id(j); }
/* The image the job runs, once known (from `created` on for one engine; a cluster may know
 * it only once the job runs, from `started`): *id the engine's image id ("sha256:..."),
 * *digest its repository digest ("name@sha256:..."); either NULL when not known or when the
 * image has none (one built locally has no digest). Valid until the job is released. */
static inline void dg_job_image(dg_job *j, const char **id, const char **digest) {
    *id = *digest = NULL;
    if (j->backend->ops->image) j->backend->ops->image(j, id, digest);
}
/* Start a created job: events->started, then line... and exited. */
static inline void dg_job_start(dg_job *j) { j->backend->ops->start(j); }
/* Ask the command to end (SIGTERM, then SIGKILL after grace_s); exited follows. */
static inline void dg_job_stop(dg_job *j, int grace_s) { j->backend->ops->stop(j, grace_s); }
/* One file out of an ended job, at most max_bytes (cut beyond). */
static inline void dg_job_read_file(dg_job *j, const char *path, size_t max_bytes, dg_job_file_cb cb, void *ud) {
    j->backend->ops->read_file(j, path, max_bytes, cb, ud);
}
/* The caller is done with the job: remove it (or keep it, remove = false). No event runs
 * afterwards; read_file callbacks in flight still run once. gone (may be NULL) runs once
 * nothing of the job is in flight any more (its removal done, err set if it failed), which
 * may be before release returns. */
static inline void dg_job_release(dg_job *j, bool remove, dg_backend_done_cb gone, void *ud) {
    j->backend->ops->release(j, remove, gone, ud);
}
/* Every job, started or not, carrying all of labels ("key=value"). */
static inline void dg_backend_list(dg_backend *b, const char *const *labels, dg_backend_list_cb cb, void *ud) {
    b->ops->list(b, labels, cb, ud);
}
/* Take over a job found by list: a started one is followed from its first line of output
 * to its exit; one only created waits for dg_job_start. */
static inline dg_job *dg_job_adopt(dg_backend *b, const dg_job_info *info, const dg_job_events *ev, void *ud) {
    return b->ops->adopt(b, info, ev, ud);
}
/* Remove a job nobody holds (found by list), in the background. */
static inline void dg_backend_remove(dg_backend *b, const char *id) { b->ops->remove(b, id); }
/* Host paths that give a job power over the backend itself (the engine's socket), resolved:
 * the volume policy refuses binds that reach them. NULL-terminated. */
static inline const char *const *dg_backend_protected_paths(dg_backend *b) { return b->ops->protected_paths(b); }
/* What the jobs run on, for the daemon's log ("Docker engine at ..., API 1.41"). */
static inline const char *dg_backend_describe(dg_backend *b) { return b->ops->describe(b); }
/* Ends every job without callbacks and closes handles; run the loop afterwards. NULL is fine. */
static inline void dg_backend_free(dg_backend *b) {
    if (b) b->ops->free(b);
}
