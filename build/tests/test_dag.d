build/tests/test_dag: tests/unit/test_dag.c include/dagd/dag.h \
 include/dagd/util.h
include/dagd/dag.h:
include/dagd/util.h:
