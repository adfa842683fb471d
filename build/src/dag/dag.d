build/src/dag/dag.o: src/dag/dag.c include/dagd/dag.h include/dagd/util.h
include/dagd/dag.h:
include/dagd/util.h:
