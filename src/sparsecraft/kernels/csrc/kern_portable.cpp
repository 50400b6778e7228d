// Portable kernels: plain C++ the compiler may auto-vectorize for the baseline ISA.
#include "kern_common.h"
#define SC_ISA 0
#define SC_NS portable
#define SC_TABLE kPortable
#include "kern_impl.h"
