// Process-wide allocator settings for tensor memory: large buffers come straight from mmap and
// go back to the system when freed, so resident memory follows the live tensors.
#include "qlora_kernels.h"

#include <malloc.h>

void ql_memory_tune(void) {
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    mallopt(M_TRIM_THRESHOLD, 8 << 20);
}
