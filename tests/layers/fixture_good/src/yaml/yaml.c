#include <yaml.h>

#include "dagd/yaml.h"
