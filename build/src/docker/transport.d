build/src/docker/transport.o: src/docker/transport.c \
 src/docker/internal.h include/dagd/docker.h include/dagd/util.h
src/docker/internal.h:
include/dagd/docker.h:
include/dagd/util.h:
