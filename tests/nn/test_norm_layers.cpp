// LayerNorm, GroupNorm and BatchNorm1d: libtorch's parameter and buffer names and shapes, the
// forward of each against its functional op, train/eval behaviour and argument errors.
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "support/numeric.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;
using namespace tapegrad::testing;

namespace {

/// (name, shape) of every parameter or buffer, in order.
std::vector<std::pair<std::string, tg::Shape>> layout(const tg::NamedTensors& tensors) {
  std::vector<std::pair<std::string, tg::Shape>> out;
  for (const auto& named : tensors) out.emplace_back(named.first, named.second.shape());
  return out;
}

using Layout = std::vector<std::pair<std::string, tg::Shape>>;

}  // namespace

TEST_CASE("LayerNorm: parameters as libtorch, forward is layer_norm", "[nn][norm]") {
  nn::LayerNorm ln({3, 4});
  CHECK(layout(ln.named_parameters()) == Layout{{"weight", {3, 4}}, {"bias", {3, 4}}});
  CHECK(ln.named_buffers().empty());
  CHECK(ln.weight().to_vector<double>() == std::vector<double>(12, 1.0));
  CHECK(ln.bias().to_vector<double>() == std::vector<double>(12, 0.0));
  ln.to(tg::DType::f64);
  {
    tg::NoGradGuard no_grad;
    ln.weight().copy_(random_tensor({3, 4}, 1, 0.5, 1.5));
    ln.bias().copy_(random_tensor({3, 4}, 2));
  }
  const tg::Tensor x = random_tensor({2, 3, 4}, 3, -2, 2);
  const tg::Tensor want = tg::layer_norm(x, {3, 4}, ln.weight(), ln.bias());
  CHECK_THAT(ln(x), AllClose(want, 0, 0));
  ln.eval();  // no running state: evaluation changes nothing
  CHECK_THAT(ln(x), AllClose(want, 0, 0));

  auto plain = nn::layer_norm({4}, {.eps = 0.1, .elementwise_affine = false});
  CHECK(plain->named_parameters().empty());
  CHECK_FALSE(plain->weight().defined());
  CHECK_THAT((*plain)(x), AllClose(tg::layer_norm(x, {4}, {}, {}, 0.1), 0, 0));
  CHECK_THROWS_WITH((*plain)(random_tensor({2, 5}, 4)),
                    Catch::Contains("layer_norm") && Catch::Contains("[4]") && Catch::Contains("[2, 5]"));
  CHECK_THROWS_AS(nn::LayerNorm(tg::Shape{}), tg::ValueError);
  CHECK_THROWS_AS(nn::LayerNorm({3, 0}), tg::ValueError);
}

TEST_CASE("GroupNorm: parameters as libtorch, forward is group_norm", "[nn][norm]") {
  nn::GroupNorm gn(2, 4);
  CHECK(gn.num_groups() == 2);
  CHECK(layout(gn.named_parameters()) == Layout{{"weight", {4}}, {"bias", {4}}});
  CHECK(gn.named_buffers().empty());
  gn.to(tg::DType::f64);
  {
    tg::NoGradGuard no_grad;
    gn.weight().copy_(random_tensor({4}, 1, 0.5, 1.5));
    gn.bias().copy_(random_tensor({4}, 2));
  }
  const tg::Tensor x = random_tensor({3, 4, 2, 5}, 3, -2, 2);
  const tg::Tensor want = tg::group_norm(x, 2, gn.weight(), gn.bias());
  CHECK_THAT(gn(x), AllClose(want, 0, 0));
  gn.eval();
  CHECK_THAT(gn(x), AllClose(want, 0, 0));

  auto plain = nn::group_norm(4, 4, {.eps = 1e-3, .affine = false});
  CHECK(plain->named_parameters().empty());
  CHECK_THAT((*plain)(x), AllClose(tg::group_norm(x, 4, {}, {}, 1e-3), 0, 0));
  CHECK_THROWS_WITH(nn::GroupNorm(4, 6), Catch::Contains("GroupNorm") && Catch::Contains("num_channels=6") &&
                                             Catch::Contains("num_groups=4"));
  CHECK_THROWS_AS(nn::GroupNorm(0, 6), tg::ValueError);
  CHECK_THROWS_AS(gn(random_tensor({3, 6, 2}, 4)), tg::ShapeError);  // 6 channels, weight [4]
}

TEST_CASE("BatchNorm1d: state as libtorch, running statistics, train and eval", "[nn][norm][batch_norm]") {
  nn::BatchNorm1d bn(3);
  CHECK(layout(bn.named_parameters()) == Layout{{"weight", {3}}, {"bias", {3}}});
  CHECK(layout(bn.named_buffers()) ==
        Layout{{"running_mean", {3}}, {"running_var", {3}}, {"num_batches_tracked", {}}});
  CHECK(bn.num_batches_tracked().dtype() == tg::DType::i64);
  bn.to(tg::DType::f64);
  const tg::Tensor x = random_tensor({5, 3, 4}, 1, -2, 3);

  // Training: batch statistics over N and L, running ones updated with momentum 0.1.
  tg::Tensor rm = tg::zeros({3}, tg::DType::f64), rv = tg::ones({3}, tg::DType::f64);
  const tg::Tensor want = tg::batch_norm(x, rm, rv, bn.weight(), bn.bias(), true);
  CHECK_THAT(bn(x), AllClose(want, 0, 0));
  CHECK_THAT(bn.running_mean(), AllClose(rm, 0, 0));
  CHECK_THAT(bn.running_var(), AllClose(rv, 0, 0));
  CHECK(bn.num_batches_tracked().item<std::int64_t>() == 1);

  // [N, C] inputs too; evaluation uses the running statistics and leaves them alone.
  const tg::Tensor x2 = random_tensor({6, 3}, 2, -1, 1);
  bn.eval();
  const tg::Tensor y = bn(x2);
  CHECK(bn.num_batches_tracked().item<std::int64_t>() == 1);
  CHECK_THAT(bn.running_mean(), AllClose(rm, 0, 0));
  CHECK_THAT(y, AllClose(tg::batch_norm(x2, rm, rv, bn.weight(), bn.bias(), false), 0, 0));

  CHECK_THROWS_WITH(bn(random_tensor({2, 3, 2, 2}, 3)),
                    Catch::Contains("batch_norm: expects input [N, C] or [N, C, L], got [2, 3, 2, 2]"));
  CHECK_THROWS_AS(nn::BatchNorm1d(3, {.momentum = -0.5}), tg::ValueError);
  CHECK_THROWS_WITH(nn::BatchNorm1d(0), Catch::Contains("BatchNorm1d"));

  auto untracked = nn::batch_norm1d(3, {.affine = false, .track_running_stats = false});
  CHECK(untracked->named_state().empty());
  untracked->eval();  // no running statistics: the batch's are used in evaluation too
  CHECK_THAT((*untracked)(x2), AllClose(tg::batch_norm(x2, {}, {}, {}, {}, true), 0, 0));
}
