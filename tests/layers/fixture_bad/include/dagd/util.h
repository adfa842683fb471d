/* Fixture for the layer check (docs/architecture.md): never compiled. */
#pragma once
#include <stddef.h>
