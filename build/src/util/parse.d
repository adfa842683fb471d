build/src/util/parse.o: src/util/parse.c include/dagd/util.h
include/dagd/util.h:
