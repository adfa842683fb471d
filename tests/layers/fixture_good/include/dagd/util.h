/* Fixture for the layer check (docs/architecture.md): never compiled. Every include
 * here is allowed by the table. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
