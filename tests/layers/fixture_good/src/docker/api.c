#  include "internal.h"
