build/src/dag/load.o: src/dag/load.c include/dagd/cron.h \
 include/dagd/util.h include/dagd/dag.h
include/dagd/cron.h:
include/dagd/util.h:
include/dagd/dag.h:
