build/tests/test_demux: tests/unit/test_demux.c include/dagd/docker.h \
 include/dagd/util.h
include/dagd/docker.h:
include/dagd/util.h:
