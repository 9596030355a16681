/*
 * Test-only access for the C fuzz driver: raw pointers into a handle's
 * shared mappings, which no production caller (and never Python) may hold.
 * Compiled only into the driver's build; not part of native/ or its cdef.
 */
#ifndef VBUSFS_IOQ_TESTING_H
#define VBUSFS_IOQ_TESTING_H

#include "ioq_private.h"

/* The ring segment (head, then descriptors). */
static inline uint8_t *ioq_ring(const struct ioq *q) { return (uint8_t *)q->head; }
/* The data segment. */
static inline uint8_t *ioq_data(const struct ioq *q) { return q->data; }

#endif
