#include <stdio.h>
#include <string.h>

#include "dagd/util.h"
