// Gradients through slices: a contiguous slice (narrow, select, chunk, unbind along a leading
// dim) is a view, and backward adds its gradient into its input's at that block instead of
// running slice_backward (OpDefinition's `view`). Each test compares that fast path with
// hand-placed sums, and with the VJPs themselves (create_graph and anomaly mode take the
// plain path), for leaves and recorded inputs, overlapping blocks, consumers that are not
// slices, and across backward calls.
#include <vector>

#include "support/numeric.hpp"

namespace tg = tapegrad;
using namespace tapegrad::testing;
using tg::Tensor;

namespace {

/// One slice of a test: x.narrow(dim, start, length), or x.select(dim, start) when length is 0.
struct Part {
  std::int64_t dim, start, length;
};

Tensor take(const Tensor& x, const Part& p) {
  return p.length == 0 ? tg::select(x, p.dim, p.start) : tg::narrow(x, p.dim, p.start, p.length);
}

/// Σ_k <take(x, part_k), w_k> + <x, v> (the last term only when v is defined).
Tensor loss_of(const Tensor& x, const std::vector<Part>& parts, const std::vector<Tensor>& weights,
               const Tensor& v) {
  Tensor loss = tg::sum(x * (v.defined() ? v : tg::zeros(x.shape(), x.dtype())));
  for (std::size_t k = 0; k < parts.size(); ++k) loss = loss + tg::sum(take(x, parts[k]) * weights[k]);
  return loss;
}

/// The gradient of loss_of by hand: each w_k added at its part's positions, plus v.
std::vector<double> expected_grad(const tg::Shape& shape, const std::vector<Part>& parts,
                                  const std::vector<Tensor>& weights, const Tensor& v) {
  std::vector<double> g = v.defined() ? v.to_vector<double>()
                                      : std::vector<double>(static_cast<std::size_t>(shape.numel()));
  for (std::size_t k = 0; k < parts.size(); ++k) {
    // Which elements of x the part reads, found by slicing a tensor of element numbers.
    std::vector<double> ids(g.size());
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<double>(i);
    const std::vector<double> at = take(f64(ids, shape), parts[k]).to_vector<double>();
    const std::vector<double> w = weights[k].to_vector<double>();
    for (std::size_t i = 0; i < at.size(); ++i) g[static_cast<std::size_t>(at[i])] += w[i];
  }
  return g;
}

std::vector<Tensor> weights_for(const tg::Shape& shape, const std::vector<Part>& parts) {
  std::vector<Tensor> w;
  std::uint64_t seed = 900;
  for (const Part& p : parts) {
    w.push_back(random_cotangent(take(tg::zeros(shape), p).shape(), tg::DType::f64, seed++));
  }
  return w;
}

}  // namespace

TEST_CASE("slice gradients: selects and overlapping narrows of a leaf add up exactly",
          "[ops][slice][grad]") {
  const tg::Shape shape{5, 3, 4};
  // Whole leading rows, blocks inside a row, overlaps, a select of a select's source, and a
  // narrow along dim 1 (not a contiguous block: the plain slice_backward path) mixed in.
  const std::vector<Part> parts{{0, 0, 0}, {0, 4, 0}, {0, 1, 3}, {0, 2, 2}, {0, -1, 0},
                                {1, 1, 2}, {0, 0, 5}, {2, 3, 0}};
  const auto weights = weights_for(shape, parts);
  const Tensor v = random_cotangent(shape, tg::DType::f64, 77);
  for (const bool with_other_consumer : {false, true}) {
    Tensor x = leaf(shape, 1);
    const Tensor other = with_other_consumer ? v : Tensor();
    loss_of(x, parts, weights, other).backward();
    CHECK_THAT(x.grad(), AllClose(expected_grad(shape, parts, weights, other), shape,
                                  tg::DType::f64, 1e-14, 1e-14));

    // The plain path: each slice_backward run as a recorded VJP.
    Tensor y = leaf(shape, 1);
    const Tensor plain = tg::grad({loss_of(y, parts, weights, other)}, {y}, {},
                                  tg::GradOptions{.create_graph = true})[0];
    CHECK_THAT(x.grad(), AllClose(plain.detach(), 1e-14, 1e-14));
  }
}

TEST_CASE("slice gradients: into a recorded tensor, through grad(), and accumulated across "
          "backward calls", "[ops][slice][grad]") {
  const tg::Shape shape{6, 4};
  const std::vector<Part> parts{{0, 5, 0}, {0, 0, 6}, {0, 2, 3}, {0, 2, 0}, {0, 3, 1}};
  const auto weights = weights_for(shape, parts);
  const Tensor v = random_cotangent(shape, tg::DType::f64, 78);
  Tensor x = leaf(shape, 2);
  const auto build = [&] {
    const Tensor y = x * 3.0;  // the slices' source is recorded: its gradient is a vertex slot
    return loss_of(y, parts, weights, v);
  };
  std::vector<double> want = expected_grad(shape, parts, weights, v);
  for (double& g : want) g *= 3.0;

  const Tensor captured = tg::grad({build()}, {x})[0];
  CHECK_THAT(captured, AllClose(want, shape, tg::DType::f64, 1e-14, 1e-14));
  {
    tg::AnomalyGuard anomaly;  // anomaly mode checks each VJP's result: the plain path
    CHECK_THAT(tg::grad({build()}, {x})[0], AllClose(want, shape, tg::DType::f64, 1e-14, 1e-14));
  }
  build().backward();
  build().backward();
  std::vector<double> twice = want;
  for (double& g : twice) g *= 2.0;
  CHECK_THAT(x.grad(), AllClose(twice, shape, tg::DType::f64, 1e-14, 1e-14));
}

TEST_CASE("slice gradients: a seed and a gradient shared by two inputs are never changed in "
          "place", "[ops][slice][grad]") {
  // add's VJP hands grad_out itself to both inputs, so y's slot first holds the seed: the
  // second gradient (y + y), or the selects' blocks (y + stack of its rows), must go into a
  // tensor of the slot's own.
  const auto rows = [](const Tensor& y) {
    return tg::stack({tg::select(y, 0, 0), tg::select(y, 0, 1), tg::select(y, 0, 2), tg::select(y, 0, 3)});
  };
  for (const bool with_selects : {false, true}) {
    Tensor x = leaf({4, 3}, 3);
    const Tensor y = x * 1.0;
    const Tensor seed = random_cotangent({4, 3}, tg::DType::f64, 79);
    const std::vector<double> seed_before = seed.to_vector<double>();
    (y + (with_selects ? rows(y) : y)).backward(seed);
    CHECK(seed.to_vector<double>() == seed_before);
    std::vector<double> want = seed_before;
    for (double& g : want) g *= 2.0;
    CHECK_THAT(x.grad(), AllClose(want, {4, 3}, tg::DType::f64, 1e-14, 1e-14));
  }
}

TEST_CASE("slice gradients: create_graph through selects gives exact second derivatives",
          "[ops][slice][grad]") {
  // f(x) = Σ_t Σ (x_t)³ · w_t over the rows x_t of x; ∂f/∂x_t = 3 x_t² w_t, and the gradient of
  // <∂f/∂x, u> is 6 x u w (row by row).
  const tg::Shape shape{4, 5};
  Tensor x = leaf(shape, 4);
  const Tensor w = random_cotangent(shape, tg::DType::f64, 80);
  const Tensor u = random_cotangent(shape, tg::DType::f64, 81);
  Tensor f = tg::zeros({}, tg::DType::f64);
  for (std::int64_t t = 0; t < shape[0]; ++t) {
    const Tensor row = tg::select(x, 0, t);
    f = f + tg::sum(row * row * row * tg::select(w, 0, t));
  }
  const Tensor g = tg::grad({f}, {x}, {}, tg::GradOptions{.create_graph = true})[0];
  CHECK_THAT(g.detach(), AllClose((3.0 * x * x * w).detach(), 1e-13, 1e-13));
  tg::sum(g * u).backward();
  CHECK_THAT(x.grad(), AllClose((6.0 * x * u * w).detach(), 1e-13, 1e-13));
}
