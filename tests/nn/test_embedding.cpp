// nn::Embedding: the parameter is named "weight" as in libtorch, initialised N(0, 1) as
// torch.nn.Embedding with the padding row zeroed, and the padding row never learns.
#include <cmath>
#include <numeric>

#include "support/numeric.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;
using tg::testing::i64;

TEST_CASE("nn::Embedding: weight, N(0, 1) init, padding row", "[nn][embedding]") {
  tg::manual_seed(5);
  nn::Embedding table(400, 50, -2);
  CHECK(table.padding_idx() == 398);
  const auto params = table.named_parameters();
  REQUIRE(params.size() == 1);
  CHECK(params[0].first == "weight");
  CHECK(params[0].second.shape() == tg::Shape{400, 50});
  CHECK(params[0].second.requires_grad());
  const std::vector<double> w = table.weight().to_vector<double>();
  for (std::size_t j = 0; j < 50; ++j) CHECK(w[398 * 50 + j] == 0.0);
  const double mean = std::accumulate(w.begin(), w.end(), 0.0) / static_cast<double>(w.size());
  double var = 0;
  for (double v : w) var += (v - mean) * (v - mean);
  var /= static_cast<double>(w.size());
  CHECK(std::abs(mean) < 0.02);
  CHECK(std::abs(std::sqrt(var) - 1.0) < 0.02);

  const tg::Tensor ids = i64({398, 3, 3, 0}, {2, 2});
  const tg::Tensor out = table.forward(ids);
  CHECK(out.shape() == tg::Shape{2, 2, 50});
  CHECK_THAT(out, tg::testing::AllClose(tg::embedding(ids, table.weight(), 398)));
  tg::sum(out).backward();
  const std::vector<double> g = table.weight().grad().to_vector<double>();
  CHECK(g[398 * 50] == 0.0);
  CHECK(g[3 * 50] == 2.0);
  CHECK(g[0] == 1.0);
  CHECK(g[1 * 50] == 0.0);

  CHECK(nn::embedding(3, 2)->padding_idx() == std::nullopt);
  CHECK_THROWS_AS(nn::Embedding(3, 2, 3), tg::ValueError);
  CHECK_THROWS_WITH(nn::Embedding(3, 2, -4), Catch::Contains("Embedding: padding_idx -4"));
  CHECK_THROWS_AS(nn::Embedding(0, 2), tg::ValueError);
}
