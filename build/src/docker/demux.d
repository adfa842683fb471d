build/src/docker/demux.o: src/docker/demux.c include/dagd/docker.h \
 include/dagd/util.h
include/dagd/docker.h:
include/dagd/util.h:
