/* wrong: src/gadget/ is not a module of the table */
#include "dagd/util.h"
