build/src/cron/cron.o: src/cron/cron.c include/dagd/cron.h \
 include/dagd/util.h
include/dagd/cron.h:
include/dagd/util.h:
