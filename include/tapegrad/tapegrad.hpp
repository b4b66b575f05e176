#pragma once
/// \file
/// tapegrad: reverse-mode automatic differentiation of tensor programs in C++20.
/// Include this one header: `#include <tapegrad/tapegrad.hpp>`.
#include "tapegrad/autograd.hpp"  // IWYU pragma: export
#include "tapegrad/checkpoint.hpp"  // IWYU pragma: export
#include "tapegrad/data.hpp"      // IWYU pragma: export
#include "tapegrad/error.hpp"     // IWYU pragma: export
#include "tapegrad/functional.hpp"  // IWYU pragma: export
#include "tapegrad/gradcheck.hpp"  // IWYU pragma: export
#include "tapegrad/nn.hpp"        // IWYU pragma: export
#include "tapegrad/op.hpp"        // IWYU pragma: export
#include "tapegrad/ops.hpp"       // IWYU pragma: export
#include "tapegrad/optim.hpp"     // IWYU pragma: export
#include "tapegrad/shape.hpp"     // IWYU pragma: export
#include "tapegrad/tensor.hpp"    // IWYU pragma: export
