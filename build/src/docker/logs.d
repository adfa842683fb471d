build/src/docker/logs.o: src/docker/logs.c src/docker/internal.h \
 include/dagd/docker.h include/dagd/util.h
src/docker/internal.h:
include/dagd/docker.h:
include/dagd/util.h:
