build/tests/test_docker: tests/unit/test_docker.c include/dagd/dag.h \
 include/dagd/util.h include/dagd/docker.h
include/dagd/dag.h:
include/dagd/util.h:
include/dagd/docker.h:
