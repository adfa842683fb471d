#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>

#include "dagd/log.h"
