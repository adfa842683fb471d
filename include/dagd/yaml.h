/* yaml — YAML text as a small tree of marked nodes (scalars, sequences, mappings), so that
 * every reader (DAG files, dagd.yml, the connections file) can point its errors at
 * file:line:col. Aliases are resolved by copying, duplicate mapping keys are reported, and
 * sizes and depth are bounded. A tree owns all its strings; dg_ynode_free releases it. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "dagd/util.h"

typedef enum { DG_YSCALAR, DG_YSEQ, DG_YMAP } dg_ytype;

typedef struct dg_ynode {
    dg_ytype type;
    int line, col;            /* 1-based */
    bool quoted;              /* quoted, block or !!str scalar: always a string */
    bool dup;                 /* a mapping key already seen in its mapping (reported) */
    char *str;                /* scalar text */
    struct dg_ynode **kids;   /* sequence items; mapping key, value, key, value ... */
    size_t n;                 /* number of kids */
    char *anchor;             /* anchor of a container still being built */
} dg_ynode;

/* NULL when the text is not a usable YAML document; problems are added to diags. A tree
 * may also come back with non-fatal problems (duplicate keys) already in diags. */
dg_ynode *dg_yaml_parse(const char *file, const char *text, size_t len, dg_diags *diags);
void dg_ynode_free(dg_ynode *n);
