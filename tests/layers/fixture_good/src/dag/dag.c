#include "dagd/dag.h"
#include "dagd/tmpl.h"
#include "dagd/yaml.h"
