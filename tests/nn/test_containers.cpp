// The containers: ModuleList, Sequential (a ModuleList that chains), ModuleDict and Identity.
// Their parameters carry libtorch's names ("0.weight", "<key>.bias") in named_parameters()
// and checkpoints; typed access and every misuse is a clear error.
#include <filesystem>

#include "support/numeric.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;
using Catch::Contains;

namespace {

std::vector<std::string> names(const tg::NamedTensors& list) {
  std::vector<std::string> out;
  for (const auto& [n, _] : list) out.push_back(n);
  return out;
}

/// A residual MLP as a user writes one: blocks in a ModuleList, heads in a ModuleDict.
struct Model : nn::Module {
  Model() {
    blocks = register_module("blocks", nn::module_list({nn::linear(4, 4), nn::identity(), nn::linear(4, 4)}));
    heads = register_module("heads", nn::module_dict({{"class", nn::linear(4, 3)}, {"score", nn::linear(4, 1, false)}}));
  }
  tg::Tensor forward(const tg::Tensor& x) override {
    tg::Tensor h = x;
    for (const auto& block : *blocks) h = h + tg::relu((*block)(h));
    return (*heads)["class"](h);
  }
  std::shared_ptr<nn::ModuleList> blocks;
  std::shared_ptr<nn::ModuleDict> heads;
};

}  // namespace

TEST_CASE("ModuleList and ModuleDict: libtorch's names, iteration, typed access", "[nn][containers]") {
  tg::manual_seed(5);
  Model model;
  CHECK(names(model.named_parameters()) ==
        std::vector<std::string>{"blocks.0.weight", "blocks.0.bias", "blocks.2.weight", "blocks.2.bias",
                                 "heads.class.weight", "heads.class.bias", "heads.score.weight"});
  CHECK(model.blocks->size() == 3);
  CHECK(model.heads->keys() == std::vector<std::string>{"class", "score"});
  CHECK(model.heads->contains("score"));
  CHECK_FALSE(model.heads->contains("missing"));
  CHECK(model.blocks->at<nn::Linear>(2).weight().shape() == tg::Shape{4, 4});
  CHECK_FALSE(model.heads->at<nn::Linear>("score").bias().defined());

  const tg::Tensor x = tg::randn({2, 4});
  const tg::Tensor y = model(x);
  CHECK(y.shape() == tg::Shape{2, 3});
  tg::sum(y).backward();
  CHECK(model.blocks->at<nn::Linear>(0).weight().grad().defined());
  CHECK_FALSE(model.heads->at<nn::Linear>("score").weight().grad().defined());  // not on the path

  // A checkpoint round trip restores every container's parameters by name.
  const auto path = std::filesystem::temp_directory_path() / "tapegrad_containers.tgc";
  nn::save_checkpoint(path.string(), model.named_state());
  Model other;
  nn::load_into(path.string(), other.named_state());
  std::filesystem::remove(path);
  CHECK_THAT(other(x), tg::testing::AllClose(y.detach()));
}

TEST_CASE("Identity returns its input, in Sequential too", "[nn][containers]") {
  const tg::Tensor x = tg::randn({3, 2});
  CHECK(nn::Identity()(x).shares_storage(x));
  auto seq = nn::sequential({nn::identity(), nn::relu()});
  CHECK_THAT((*seq)(x), tg::testing::AllClose(tg::relu(x)));
  CHECK(seq->named_parameters().empty());
}

TEST_CASE("Containers: errors name the container, the index or key and the types", "[nn][containers][errors]") {
  nn::ModuleList list{nn::linear(2, 2)};
  CHECK_THROWS_WITH(list[1], Contains("ModuleList") && Contains("index 1") && Contains("1 modules"));
  CHECK_THROWS_WITH(list.at<nn::ReLU>(0), Contains("module 0") && Contains("tapegrad::nn::Linear") &&
                                              Contains("tapegrad::nn::ReLU"));
  CHECK_THROWS_WITH(list(tg::zeros({1, 2})), Contains("ModuleList") && Contains("no forward"));
  CHECK_THROWS_WITH(list.push_back(nullptr), Contains("ModuleList") && Contains("null"));
  nn::Sequential seq{nn::relu()};
  CHECK_THROWS_WITH(seq[3], Contains("Sequential") && Contains("index 3"));

  nn::ModuleDict dict{{"a", nn::relu()}};
  CHECK_THROWS_WITH(dict["b"], Contains("ModuleDict") && Contains("'b'") && Contains("a"));
  CHECK_THROWS_WITH(dict.at<nn::Linear>("a"), Contains("module 'a'") && Contains("tapegrad::nn::ReLU"));
  CHECK_THROWS_AS(dict.insert("a", nn::relu()), tg::ValueError);     // already used
  CHECK_THROWS_AS(dict.insert("x.y", nn::relu()), tg::ValueError);   // dotted
  CHECK_THROWS_AS(dict.insert("", nn::relu()), tg::ValueError);      // empty
  CHECK_THROWS_WITH(dict.insert("c", nullptr), Contains("ModuleDict") && Contains("null"));
  CHECK_THROWS_WITH(dict(tg::zeros({1})), Contains("ModuleDict") && Contains("no forward"));
}
