// The CKernels module's umbrella header: every public kernel interface.
#include "qlora_kernels.h"
#include "qlora_quant.h"
#include "qlora_optim.h"
#include "qlora_nn.h"
#include "qlora_system.h"
#include "qlora_ggml.h"
