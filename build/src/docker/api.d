build/src/docker/api.o: src/docker/api.c src/docker/internal.h \
 include/dagd/docker.h include/dagd/util.h
src/docker/internal.h:
include/dagd/docker.h:
include/dagd/util.h:
