/*
 * The C side's way in to ioq.h: that header is fed unchanged to cffi's
 * cdef, so it can have neither include guards nor #includes; this wrapper
 * gives it both.  Every C file and private header includes this, never
 * ioq.h directly.
 */
#ifndef VBUSFS_IOQ_ABI_H
#define VBUSFS_IOQ_ABI_H

#include <stdint.h>

#include "ioq.h"

#endif
