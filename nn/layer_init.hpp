#pragma once
// PyTorch's default initialisation of a layer's weight and bias, shared by the layer files
// (layers.cpp, conv_layers.cpp). Internal: not a public header.
#include "tapegrad/tensor.hpp"

namespace tapegrad::nn::detail {

/// reset_parameters of torch.nn.Linear and _ConvNd: kaiming_uniform(a = √5) on the weight,
/// U(±1/√fan_in) on the bias (when non-null and defined), fan_in from the weight's dim 1 and
/// kernel (for a transposed conv that is out_channels/groups, as PyTorch computes it).
void default_init(Tensor& weight, Tensor* bias);

}  // namespace tapegrad::nn::detail
