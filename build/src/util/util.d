build/src/util/util.o: src/util/util.c include/dagd/util.h
include/dagd/util.h:
