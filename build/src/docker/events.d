build/src/docker/events.o: src/docker/events.c src/docker/internal.h \
 include/dagd/docker.h include/dagd/util.h
src/docker/internal.h:
include/dagd/docker.h:
include/dagd/util.h:
