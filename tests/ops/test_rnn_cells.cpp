// lstm_cell and gru_cell beyond the PyTorch fixture: every bad argument an Error naming the
// op, the argument and the shapes; the fused op is one node whose VJP adds into existing
// gradients; f32 and f64 agree.
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

#include "support/numeric.hpp"

namespace tg = tapegrad;
using Catch::Matchers::Contains;
using tg::testing::random_tensor;

namespace {

struct CellArgs {
  tg::Tensor x = random_tensor({2, 3}, 1), h = random_tensor({2, 4}, 2), c = random_tensor({2, 4}, 3);
  tg::Tensor w_ih, w_hh, b_ih, b_hh;
  explicit CellArgs(std::int64_t gates)
      : w_ih(random_tensor({gates * 4, 3}, 4)), w_hh(random_tensor({gates * 4, 4}, 5)),
        b_ih(random_tensor({gates * 4}, 6)), b_hh(random_tensor({gates * 4}, 7)) {}
  tg::Tensor lstm() const { return std::get<0>(tg::lstm_cell(x, {h, c}, w_ih, w_hh, b_ih, b_hh)); }
  tg::Tensor gru() const { return tg::gru_cell(x, h, w_ih, w_hh, b_ih, b_hh); }
};

}  // namespace

TEST_CASE("lstm_cell and gru_cell: bad arguments are errors naming the op, the argument and the shapes",
          "[ops][rnn]") {
  for (const std::int64_t gates : {4, 3}) {
    const std::string op = gates == 4 ? "lstm_cell" : "gru_cell";
    INFO(op);
    const auto run = [gates](const CellArgs& a) { return gates == 4 ? a.lstm() : a.gru(); };
    CellArgs ok(gates);
    CHECK(run(ok).shape() == tg::Shape{2, 4});

    CellArgs rank(gates);
    rank.x = random_tensor({2, 2, 3}, 8);
    CHECK_THROWS_AS(run(rank), tg::ShapeError);
    CHECK_THROWS_WITH(run(rank), Contains(op) && Contains("input") && Contains("[2, 2, 3]"));

    CellArgs input_size(gates);
    input_size.x = random_tensor({2, 5}, 9);
    CHECK_THROWS_AS(run(input_size), tg::ShapeError);
    CHECK_THROWS_WITH(run(input_size), Contains(op) && Contains("input_size 5") &&
                                           Contains(fmt::format("[{}, 3]", gates * 4)));

    CellArgs rows(gates);
    rows.w_ih = random_tensor({gates * 4 + 1, 3}, 10);
    CHECK_THROWS_WITH(run(rows), Contains(op) && Contains("w_ih") && Contains(fmt::format("{}·hidden_size", gates)));

    CellArgs w_hh(gates);
    w_hh.w_hh = random_tensor({gates * 4, 3}, 11);
    CHECK_THROWS_AS(run(w_hh), tg::ShapeError);
    CHECK_THROWS_WITH(run(w_hh), Contains(op) && Contains("w_hh") && Contains(fmt::format("[{}, 3]", gates * 4)));

    CellArgs bias(gates);
    bias.b_hh = random_tensor({4}, 12);
    CHECK_THROWS_AS(run(bias), tg::ShapeError);
    CHECK_THROWS_WITH(run(bias), Contains(op) && Contains("b_hh") && Contains("[4]"));

    CellArgs batch(gates);
    batch.h = random_tensor({3, 4}, 13);
    CHECK_THROWS_AS(run(batch), tg::ShapeError);
    CHECK_THROWS_WITH(run(batch), Contains(op) && Contains("h must be [2, 4]") && Contains("[3, 4]"));

    CellArgs unbatched(gates);
    unbatched.x = random_tensor({3}, 14);
    CHECK_THROWS_WITH(run(unbatched), Contains(op) && Contains("h must be [4]") && Contains("[2, 4]"));

    CellArgs dtype(gates);
    dtype.w_hh = dtype.w_hh.to(tg::DType::f32);
    CHECK_THROWS_AS(run(dtype), tg::DTypeError);
    CHECK_THROWS_WITH(run(dtype), Contains(op) && Contains("w_hh") && Contains("f32"));
  }
  CellArgs c_shape(4);
  c_shape.c = random_tensor({2, 5}, 15);
  CHECK_THROWS_WITH(c_shape.lstm(), Contains("lstm_cell") && Contains("c must be [2, 4]") && Contains("[2, 5]"));
}

TEST_CASE("fused_lstm_cell and fused_gru_cell: gate and state shapes are checked", "[ops][rnn]") {
  const tg::Tensor gates = random_tensor({2, 8}, 1), c = random_tensor({2, 2}, 2);
  CHECK(tg::fused_lstm_cell(gates, gates, c).shape() == tg::Shape{2, 2, 2});
  CHECK_THROWS_WITH(tg::fused_lstm_cell(gates, random_tensor({2, 4}, 3), c),
                    Contains("fused_lstm_cell") && Contains("hidden_gates") && Contains("[2, 4]"));
  CHECK_THROWS_WITH(tg::fused_lstm_cell(gates, gates, random_tensor({2, 3}, 4)),
                    Contains("fused_lstm_cell") && Contains("c must be [2, 2]") && Contains("[2, 3]"));
  CHECK_THROWS_WITH(tg::fused_gru_cell(gates, gates, random_tensor({2, 2}, 5)),
                    Contains("fused_gru_cell") && Contains("3·hidden_size") && Contains("[2, 8]"));
  CHECK_THROWS_AS(tg::fused_gru_cell(random_tensor({2, 2, 3}, 6), random_tensor({2, 2, 3}, 6), random_tensor({2, 2, 1}, 7)),
                  tg::ShapeError);
}

TEST_CASE("lstm_cell and gru_cell: backward adds into existing gradients, f32 agrees with f64", "[ops][rnn]") {
  for (const std::int64_t gates : {4, 3}) {
    INFO(gates);
    CellArgs a(gates);
    for (tg::Tensor* t : {&a.x, &a.h, &a.c, &a.w_ih, &a.w_hh, &a.b_ih, &a.b_hh}) t->set_requires_grad(true);
    const tg::Tensor v = random_tensor({2, 4}, 20);
    const auto out = [&] { return gates == 4 ? a.lstm() : a.gru(); };
    tg::sum(out() * v).backward();
    const std::vector<double> once = a.w_hh.grad().to_vector<double>();
    tg::sum(out() * v).backward();
    const std::vector<double> twice = a.w_hh.grad().to_vector<double>();
    for (std::size_t i = 0; i < once.size(); ++i) CHECK(twice[i] == Approx(2 * once[i]).margin(1e-15));

    CellArgs f(gates);
    for (tg::Tensor* t : {&f.x, &f.h, &f.c, &f.w_ih, &f.w_hh, &f.b_ih, &f.b_hh}) *t = t->to(tg::DType::f32);
    const tg::Tensor got = gates == 4 ? f.lstm() : f.gru();
    CHECK(got.dtype() == tg::DType::f32);
    const std::vector<double> want = (gates == 4 ? CellArgs(4).lstm() : CellArgs(3).gru()).to_vector<double>();
    const std::vector<double> have = got.to_vector<double>();
    for (std::size_t i = 0; i < want.size(); ++i) CHECK(have[i] == Approx(want[i]).margin(1e-6));
  }
}

TEST_CASE("fused_lstm_cell and fused_gru_cell: rows split across threads match the gates written as ops",
          "[ops][rnn]") {
  // 37 rows of 128: above kParallelGateElements, split unevenly (18 + 19) at two threads.
  constexpr std::int64_t kH = 128;
  for (const std::int64_t gates : {4, 3}) {
    INFO(gates);
    const tg::Tensor gi = random_tensor({37, gates * kH}, 30).set_requires_grad(true);
    const tg::Tensor gh = random_tensor({37, gates * kH}, 31).set_requires_grad(true);
    const tg::Tensor state = random_tensor({37, kH}, 32).set_requires_grad(true);
    const auto part = [](const tg::Tensor& t, std::int64_t k) { return tg::narrow(t, -1, k * kH, kH); };
    tg::Tensor fused, composite;
    if (gates == 4) {
      fused = tg::fused_lstm_cell(gi, gh, state);
      const tg::Tensor g = gi + gh;
      const tg::Tensor c = tg::sigmoid(part(g, 1)) * state + tg::sigmoid(part(g, 0)) * tg::tanh(part(g, 2));
      composite = tg::stack({tg::sigmoid(part(g, 3)) * tg::tanh(c), c}, 0);
    } else {
      fused = tg::fused_gru_cell(gi, gh, state);
      const tg::Tensor r = tg::sigmoid(part(gi, 0) + part(gh, 0)), z = tg::sigmoid(part(gi, 1) + part(gh, 1));
      const tg::Tensor n = tg::tanh(part(gi, 2) + r * part(gh, 2));
      composite = (1.0 - z) * n + z * state;
    }
    CHECK_THAT(fused, tg::testing::AllClose(composite, 1e-12, 1e-12));
    const tg::Tensor v = random_tensor(fused.shape(), 33);
    const auto got = tg::grad({fused}, {gi, gh, state}, {v});
    const auto want = tg::grad({composite}, {gi, gh, state}, {v});
    for (std::size_t i = 0; i < got.size(); ++i) CHECK_THAT(got[i], tg::testing::AllClose(want[i], 1e-12, 1e-12));
  }
}
