#pragma once
#include "dagd/util.h"
#include "dagd/yaml.h"
