build/tests/test_cron: tests/unit/test_cron.c include/dagd/cron.h \
 include/dagd/util.h
include/dagd/cron.h:
include/dagd/util.h:
