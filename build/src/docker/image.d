build/src/docker/image.o: src/docker/image.c include/dagd/dag.h \
 include/dagd/util.h src/docker/internal.h include/dagd/docker.h
include/dagd/dag.h:
include/dagd/util.h:
src/docker/internal.h:
include/dagd/docker.h:
