build/src/docker/archive.o: src/docker/archive.c src/docker/internal.h \
 include/dagd/docker.h include/dagd/util.h
src/docker/internal.h:
include/dagd/docker.h:
include/dagd/util.h:
