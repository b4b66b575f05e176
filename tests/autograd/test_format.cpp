// fmt formatting of tensors, shapes and dtypes.
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

namespace tg = tapegrad;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using Catch::Matchers::EndsWith;

TEST_CASE("a small 2-D tensor prints its values in row-major order", "[format]") {
  tg::Tensor t = tg::from_vector(std::vector<double>{1.5, -2.25, 3.0, 40.125}, {2, 2});
  const std::string s = fmt::format("{}", t);
  INFO(s);
  REQUIRE(s == tg::to_string(t));
  REQUIRE_THAT(s, StartsWith("tensor([[") && EndsWith(")"));
  REQUIRE_THAT(s, Contains("shape=[2, 2]") && Contains("dtype=f32"));
  const auto p1 = s.find("1.5");
  const auto p2 = s.find("-2.25");
  const auto p3 = s.find("3.0");
  const auto p4 = s.find("40.125");
  REQUIRE(p1 != std::string::npos);
  REQUIRE(p2 != std::string::npos);
  REQUIRE(p3 != std::string::npos);
  REQUIRE(p4 != std::string::npos);
  REQUIRE(p1 < p2);
  REQUIRE(p2 < p3);
  REQUIRE(p3 < p4);
  REQUIRE(s.find(']') > p2);           // the first row closes after its 2 values...
  REQUIRE(s.find(']') < p3);           // ...and before the second row
  REQUIRE(s.find("]]") > p4);
  REQUIRE_THAT(s, !Contains("requires_grad") && !Contains("grad_fn"));
  REQUIRE_THAT(s, !Contains("..."));
}

TEST_CASE("formatting shows the dtype, integers without decimals", "[format]") {
  const std::string d = fmt::format("{}", tg::from_vector(std::vector<double>{0.5, 2}, {2}, tg::DType::f64));
  REQUIRE_THAT(d, Contains("dtype=f64") && Contains("shape=[2]") && Contains("0.5"));
  const std::string i = fmt::format("{}", tg::from_vector(std::vector<std::int64_t>{7, -3, 12}, {3, 1}));
  INFO(i);
  REQUIRE_THAT(i, Contains("dtype=i64") && Contains("shape=[3, 1]") && Contains("-3") &&
                      Contains("12"));
  REQUIRE_THAT(i, !Contains("7.") && !Contains("12."));
}

TEST_CASE("formatting marks gradient leaves and recorded results", "[format]") {
  tg::Tensor x = tg::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3});
  x.set_requires_grad(true);
  const std::string leaf = fmt::format("{}", x);
  REQUIRE_THAT(leaf, Contains("requires_grad=true") && !Contains("grad_fn"));

  const std::string mul = fmt::format("{}", x * x);
  REQUIRE_THAT(mul, Contains("grad_fn=mul") && Contains("36"));
  REQUIRE_THAT(fmt::format("{}", tg::sum(x)), Contains("grad_fn=sum") && Contains("shape=[]") &&
                                                   Contains("21"));
  REQUIRE_THAT(fmt::format("{}", x.reshape({3, 2})), Contains("grad_fn=reshape"));
  REQUIRE_THAT(fmt::format("{}", x.detach()), !Contains("requires_grad") && !Contains("grad_fn"));
  tg::NoGradGuard no_grad;
  REQUIRE_THAT(fmt::format("{}", x * x), !Contains("grad_fn"));
}

TEST_CASE("a large tensor is summarised with ...", "[format]") {
  const std::string s = fmt::format("{}", tg::arange(2000.0));
  INFO(s);
  REQUIRE_THAT(s, Contains("...") && Contains("shape=[2000]"));
  REQUIRE_THAT(s, Contains("1999") && Contains("1997") && Contains("2.0"));
  REQUIRE_THAT(s, !Contains("1000.0") && !Contains("1996"));
  REQUIRE(s.size() < 200);

  const std::string m = fmt::format("{}", tg::arange(2000.0, tg::DType::f64).reshape({50, 40}));
  INFO(m);
  REQUIRE_THAT(m, Contains("...") && Contains("shape=[50, 40]") && Contains("1999"));
  REQUIRE_THAT(m, !Contains("1000.0") && !Contains("1996"));  // 1000 = row 25, 1996 = col 36
  REQUIRE(m.size() < 1000);

  // At 1000 elements nothing is left out yet.
  REQUIRE_THAT(fmt::format("{}", tg::arange(1000.0)), !Contains("...") && Contains("500.0"));
}

TEST_CASE("edge cases: 0-dim, empty, undefined", "[format]") {
  REQUIRE_THAT(fmt::format("{}", tg::scalar_tensor(2.5)), Contains("2.5") && Contains("shape=[]"));
  REQUIRE_THAT(fmt::format("{}", tg::zeros({0, 3})), Contains("[]") && Contains("shape=[0, 3]"));
  REQUIRE(fmt::format("{}", tg::Tensor()) == "tensor(undefined)");
}

TEST_CASE("Shape formats as a bracketed list, DType by its name", "[format]") {
  REQUIRE(fmt::format("{}", tg::Shape{2, 3, 28, 28}) == "[2, 3, 28, 28]");
  REQUIRE(tg::to_string(tg::Shape{7}) == "[7]");
  REQUIRE(fmt::format("{}", tg::Shape{}) == "[]");
  REQUIRE(fmt::format("{} {} {}", tg::DType::f32, tg::DType::f64, tg::DType::i64) == "f32 f64 i64");
  REQUIRE(fmt::format("{:>8}", tg::Shape{1, 2}) == "  [1, 2]");
}
