build/src/docker/host.o: src/docker/host.c include/dagd/docker.h \
 include/dagd/util.h
include/dagd/docker.h:
include/dagd/util.h:
