#include "dagd/config.h"
#include "dagd/yaml.h"
