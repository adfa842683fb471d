/* wrong: only main.c lives directly in src/ */
#include "dagd/util.h"
