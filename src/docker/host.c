/* docker/host — turns a DOCKER_HOST-style address into what libcurl needs: a unix
 * socket path or a base URL, and the TLS files when DOCKER_TLS_VERIFY asks for them.
 * Pure apart from reading the environment. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dagd/docker.h"

static bool env_true(const char *name) {
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0 && strcasecmp(v, "false") != 0;
}

static void set_tls_files(dg_docker_endpoint *e) {
    const char *dir = getenv("DOCKER_CERT_PATH");
    _cleanup_free_ char *def = NULL;
    if (!dir || !*dir) {
        const char *home = getenv("HOME");
        def = xasprintf("%s/.docker", home && *home ? home : "");
        dir = def;
    }
    e->ca = xasprintf("%s/ca.pem", dir);
    e->cert = xasprintf("%s/cert.pem", dir);
    e->key = xasprintf("%s/key.pem", dir);
}

int dg_docker_parse_host(const char *host, dg_docker_endpoint *ret, dg_error *err) {
    dg_docker_endpoint e = {0};
    if (!host || !*host) return dg_error_set(err, -EINVAL, "empty Docker host");

    if (dg_str_has_prefix(host, "unix://")) {
        const char *path = host + strlen("unix://");
        if (*path != '/')
            return dg_error_set(err, -EINVAL, "Docker host %s: the socket path must be absolute",
                                host);
        if (strlen(path) > 107)
            return dg_error_set(err, -ENAMETOOLONG, "Docker host %s: socket path too long", host);
        e.unix_path = xstrdup(path);
        e.base_url = xstrdup("http://localhost");
        *ret = e;
        return 0;
    }

    const char *rest;
    bool tls;
    if (dg_str_has_prefix(host, "tcp://")) {
        rest = host + strlen("tcp://");
        tls = env_true("DOCKER_TLS_VERIFY");
    } else if (dg_str_has_prefix(host, "http://")) {
        rest = host + strlen("http://");
        tls = false;
    } else if (dg_str_has_prefix(host, "https://")) {
        rest = host + strlen("https://");
        tls = true;
    } else {
        return dg_error_set(err, -EINVAL,
                            "unsupported Docker host %s (use unix:///path or tcp://host:port)",
                            host);
    }

    size_t n = strcspn(rest, "/");
    if (n == 0) return dg_error_set(err, -EINVAL, "Docker host %s has no host name", host);
    if (rest[n] && strspn(rest + n, "/") != strlen(rest + n))
        return dg_error_set(err, -EINVAL, "Docker host %s: a path is not supported", host);
    _cleanup_free_ char *hostport = xstrndup(rest, n);
    /* A port is present when the last ':' follows any IPv6 closing bracket. */
    const char *colon = strrchr(hostport, ':');
    const char *bracket = strrchr(hostport, ']');
    bool has_port = colon && (!bracket || colon > bracket);
    if (has_port && colon[1] == 0)
        return dg_error_set(err, -EINVAL, "Docker host %s has an empty port", host);
    if (has_port && strspn(colon + 1, "0123456789") != strlen(colon + 1))
        return dg_error_set(err, -EINVAL, "Docker host %s has a bad port", host);

    e.tls = tls;
    if (has_port)
        e.base_url = xasprintf("%s://%s", tls ? "https" : "http", hostport);
    else
        e.base_url = xasprintf("%s://%s:%d", tls ? "https" : "http", hostport, tls ? 2376 : 2375);
    if (tls) set_tls_files(&e);
    *ret = e;
    return 0;
}

void dg_docker_endpoint_free(dg_docker_endpoint *e) {
    if (!e) return;
    free(e->unix_path);
    free(e->base_url);
    free(e->ca);
    free(e->cert);
    free(e->key);
    *e = (dg_docker_endpoint){0};
}

char **dg_docker_socket_paths(const char *host) {
    if (!host || !*host) host = getenv("DOCKER_HOST");
    const char *paths[2] = {"/var/run/docker.sock", NULL};
    if (host && dg_str_has_prefix(host, "unix://")) paths[1] = host + strlen("unix://");
    char **v = xcalloc(ARRAY_SIZE(paths) + 1, sizeof(char *));
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_SIZE(paths); i++) {
        if (!paths[i]) continue;
        char *r = realpath(paths[i], NULL);
        if (!r) {
            /* no socket right now (the engine restarting): resolve its folder instead */
            _cleanup_free_ char *dir = xstrdup(paths[i]);
            char *slash = strrchr(dir, '/');
            if (slash && slash != dir) {
                *slash = 0;
                _cleanup_free_ char *rd = realpath(dir, NULL);
                if (rd) r = xasprintf("%s/%s", rd, slash + 1);
            }
        }
        v[n++] = r ? r : xstrdup(paths[i]);
    }
    return v;
}
