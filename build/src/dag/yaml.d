build/src/dag/yaml.o: src/dag/yaml.c include/dagd/dag.h \
 include/dagd/util.h
include/dagd/dag.h:
include/dagd/util.h:
