// The explicit list of built-in op files, registered in this order the first time the
// op registry is used. A new ops/ file adds one line here.
#include "ops/registration.hpp"

#define TAPEGRAD_BUILTIN_FILES(X) \
  X(binary)                       \
  X(scalar)                       \
  X(unary)                        \
  X(glu)                          \
  X(reduce)                       \
  X(reduce_extrema)               \
  X(reduce_stats)                 \
  X(prod)                         \
  X(cumsum)                       \
  X(shape)                        \
  X(copy)                         \
  X(matmul)                       \
  X(softmax)                      \
  X(loss)                         \
  X(loss_pointwise)               \
  X(dropout)                      \
  X(conv2d)                       \
  X(conv_transpose2d)             \
  X(max_pool2d)                   \
  X(avg_pool2d)                   \
  X(adaptive_avg_pool2d)          \
  X(adaptive_max_pool2d)          \
  X(interpolate)                  \
  X(batch_norm)                   \
  X(layer_norm)                   \
  X(group_norm)                   \
  X(attention)                    \
  X(where)                        \
  X(slice)                        \
  X(join)                         \
  X(expand)                       \
  X(reorder)                      \
  X(pad)                          \
  X(index)                        \
  X(lstm_cell)                    \
  X(gru_cell)

namespace tapegrad::detail {

#define TAPEGRAD_DECLARE(group) void register_builtin_##group();
TAPEGRAD_BUILTIN_FILES(TAPEGRAD_DECLARE)
#undef TAPEGRAD_DECLARE

void register_builtin_ops() {
#define TAPEGRAD_CALL(group) register_builtin_##group();
  TAPEGRAD_BUILTIN_FILES(TAPEGRAD_CALL)
#undef TAPEGRAD_CALL
}

}  // namespace tapegrad::detail
