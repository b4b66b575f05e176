// Dataset and DataLoader: batch contents, the last batch, drop_last, seeded shuffling that is
// reproducible per epoch, and normalisation.
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <set>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>
#include <tapegrad/tapegrad.hpp>

#include "temp_dir.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;
using Catch::Matchers::Contains;

namespace {

/// n samples of shape [2, 3]: sample i holds i*10 + k in element k; label i.
nn::Dataset numbered(std::int64_t n, tg::DType dtype = tg::DType::f32) {
  std::vector<double> values;
  for (std::int64_t i = 0; i < n; ++i) {
    for (int k = 0; k < 6; ++k) values.push_back(static_cast<double>(i * 10 + k));
  }
  std::vector<std::int64_t> labels(static_cast<std::size_t>(n));
  std::iota(labels.begin(), labels.end(), 0);
  return nn::Dataset(tg::from_vector(values, {n, 2, 3}, dtype), tg::from_vector(labels, {n}));
}

/// Labels of every batch of one epoch, and checks each image belongs to its label.
std::vector<std::vector<std::int64_t>> run(nn::DataLoader::Epoch epoch) {
  std::vector<std::vector<std::int64_t>> batches;
  for (const nn::Batch& b : epoch) {
    const auto labels = b.labels.to_vector<std::int64_t>();
    const auto images = b.images.to_vector<double>();
    REQUIRE(b.images.size(0) == b.labels.size(0));
    for (std::size_t i = 0; i < labels.size(); ++i) {
      for (std::size_t k = 0; k < 6; ++k) REQUIRE(images[i * 6 + k] == static_cast<double>(labels[i] * 10 + static_cast<std::int64_t>(k)));
    }
    batches.push_back(labels);
  }
  return batches;
}

}  // namespace

// An Epoch reads its loader: epoch() of a temporary loader (which would be destroyed before
// the loop runs) does not compile; of a loader that lives, it does.
template <class Loader>
concept EpochOfTemporary = requires(Loader&& loader) { std::move(loader).epoch(0); };
static_assert(!EpochOfTemporary<nn::DataLoader>);
static_assert(requires(const nn::DataLoader& loader) { loader.epoch(0); });

TEST_CASE("DataLoader batches in order with a short last batch or drop_last", "[dataloader]") {
  nn::DataLoader loader(numbered(10), {.batch_size = 4});
  REQUIRE(loader.num_batches() == 3);
  const auto batches = run(loader.epoch(0));
  REQUIRE(batches == std::vector<std::vector<std::int64_t>>{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9}});

  nn::DataLoader dropping(numbered(10), {.batch_size = 4, .drop_last = true});
  REQUIRE(dropping.num_batches() == 2);
  REQUIRE(run(dropping.epoch(0)).size() == 2);

  nn::DataLoader exact(numbered(8), {.batch_size = 4, .drop_last = true});
  REQUIRE(run(exact.epoch(0)).size() == 2);
  nn::DataLoader big(numbered(3), {.batch_size = 100});
  REQUIRE(run(big.epoch(0)) == std::vector<std::vector<std::int64_t>>{{0, 1, 2}});
  nn::DataLoader big_dropped(numbered(3), {.batch_size = 100, .drop_last = true});
  REQUIRE(run(big_dropped.epoch(0)).empty());
  nn::DataLoader none(numbered(0), {.batch_size = 2});
  REQUIRE(run(none.epoch(0)).empty());
}

TEST_CASE("DataLoader shuffles every sample once per epoch, reproducibly from the seed",
          "[dataloader]") {
  const nn::DataLoaderOptions options{.batch_size = 7, .shuffle = true, .seed = 42};
  nn::DataLoader a(numbered(50), options);
  nn::DataLoader b(numbered(50), options);
  const auto order0 = a.order(0);
  std::vector<std::int64_t> sorted = order0;
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::int64_t> identity(50);
  std::iota(identity.begin(), identity.end(), 0);
  REQUIRE(sorted == identity);        // a permutation
  REQUIRE(order0 != identity);        // shuffled
  REQUIRE(a.order(1) != order0);      // a new order every epoch
  REQUIRE(b.order(0) == order0);      // same seed, same orders
  REQUIRE(b.order(1) == a.order(1));
  nn::DataLoader c(numbered(50), {.batch_size = 7, .shuffle = true, .seed = 43});
  REQUIRE(c.order(0) != order0);

  // Range-for runs epoch 0, then 1, ...; the batches follow order(e).
  std::vector<std::int64_t> seen;
  for (const nn::Batch& batch : a) {
    for (std::int64_t l : batch.labels.to_vector<std::int64_t>()) seen.push_back(l);
  }
  REQUIRE(seen == order0);
  REQUIRE(a.next_epoch() == 1);
  const auto epoch1 = run(a.epoch(1));
  seen.clear();
  for (const nn::Batch& batch : a) {
    for (std::int64_t l : batch.labels.to_vector<std::int64_t>()) seen.push_back(l);
  }
  std::vector<std::int64_t> flat;
  for (const auto& v : epoch1) flat.insert(flat.end(), v.begin(), v.end());
  REQUIRE(seen == flat);

  // A resumed loader sees the orders of the uninterrupted one.
  b.set_next_epoch(2);
  seen.clear();
  for (const nn::Batch& batch : b) {
    for (std::int64_t l : batch.labels.to_vector<std::int64_t>()) seen.push_back(l);
  }
  REQUIRE(seen == a.order(2));

  // drop_last with shuffling drops a different remainder each epoch, never a duplicate.
  nn::DataLoader d(numbered(50), {.batch_size = 7, .shuffle = true, .seed = 1, .drop_last = true});
  std::set<std::int64_t> unique;
  for (const auto& batch : run(d.epoch(3))) unique.insert(batch.begin(), batch.end());
  REQUIRE(unique.size() == 49);
}

TEST_CASE("DataLoader normalises and keeps the dataset's dtype", "[dataloader]") {
  for (tg::DType dtype : {tg::DType::f32, tg::DType::f64}) {
    nn::DataLoader loader(numbered(3, dtype), {.batch_size = 2, .mean = 5.0, .std = 2.0});
    const nn::Batch first = *loader.epoch(0).begin();
    REQUIRE(first.images.dtype() == dtype);
    REQUIRE(first.images.shape() == tg::Shape{2, 2, 3});
    REQUIRE(first.images.at({1, 1, 2}) == Approx((15.0 - 5.0) / 2.0));
    REQUIRE(loader.dataset().images().at({1, 1, 2}) == 15.0);  // the dataset is unchanged
  }
}

TEST_CASE("Dataset and DataLoader check their arguments", "[dataloader][errors]") {
  REQUIRE_THROWS_TYPE_WITH(nn::Dataset(tg::zeros({3, 2}), tg::zeros({4}, tg::DType::i64)),
                         tg::ShapeError, Contains("images [3, 2] and labels [4]"));
  REQUIRE_THROWS_TYPE_WITH(nn::Dataset(tg::zeros({3, 2}), tg::zeros({3})), tg::DTypeError,
                         Contains("labels must be i64, got f32"));
  REQUIRE_THROWS_AS(nn::Dataset(tg::zeros({3, 2}, tg::DType::i64), tg::zeros({3}, tg::DType::i64)),
                    tg::DTypeError);
  REQUIRE_THROWS_TYPE_WITH(nn::DataLoader(numbered(3), {.batch_size = 0}), tg::ValueError,
                         Contains("batch_size must be >= 1, got 0"));
  REQUIRE_THROWS_AS(nn::DataLoader(numbered(3), {.mean = 0.5}), tg::ValueError);
  REQUIRE_THROWS_TYPE_WITH(nn::DataLoader(numbered(3), {.mean = 0.5, .std = 0.0}), tg::ValueError,
                         Contains("std must be > 0"));
  const nn::Dataset head = numbered(10).head(4);
  REQUIRE(head.size() == 4);
  REQUIRE(head.images().at({3, 1, 0}) == 33.0);
  REQUIRE(numbered(2).head(5).size() == 2);
}

TEST_CASE("a Dataset kept as bytes batches like its f32 images", "[data]") {
  // 7 samples of [1, 2, 3] bytes; value = byte / 4.
  std::vector<std::uint8_t> bytes(7 * 6);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>((i * 37) % 256);
  std::vector<std::int64_t> label_values{3, 1, 4, 1, 5, 9, 2};
  const tg::Tensor labels = tg::from_vector(label_values, {7});
  const nn::Dataset compact = nn::Dataset::from_bytes(bytes, {7, 1, 2, 3}, 0.25, labels);
  REQUIRE(compact.size() == 7);
  REQUIRE(compact.images_shape() == tg::Shape{7, 1, 2, 3});
  REQUIRE(compact.images_dtype() == tg::DType::f32);
  const tg::Tensor images = compact.images();
  REQUIRE(images.at({2, 0, 1, 2}) == static_cast<double>(bytes[2 * 6 + 5]) * 0.25);
  const nn::Dataset plain(images, labels);
  for (bool normalise : {false, true}) {
    nn::DataLoaderOptions opt{.batch_size = 3, .shuffle = true, .seed = 5};
    if (normalise) {
      opt.mean = 10.0;
      opt.std = 20.0;
    }
    nn::DataLoader a(compact, opt), b(plain, opt);
    std::vector<nn::Batch> from_a, from_b;
    for (const nn::Batch& batch : a.epoch(1)) from_a.push_back(batch);
    for (const nn::Batch& batch : b.epoch(1)) from_b.push_back(batch);
    REQUIRE(from_a.size() == 3);
    REQUIRE(from_a.size() == from_b.size());
    for (std::size_t i = 0; i < from_a.size(); ++i) {
      REQUIRE(from_a[i].labels.to_vector<std::int64_t>() == from_b[i].labels.to_vector<std::int64_t>());
      const auto x = from_a[i].images.to_vector<float>(), y = from_b[i].images.to_vector<float>();
      REQUIRE(x.size() == y.size());
      for (std::size_t k = 0; k < x.size(); ++k) REQUIRE(x[k] == Approx(y[k]).epsilon(1e-6));
    }
  }
  const nn::Dataset head = compact.head(2);
  REQUIRE(head.images_shape() == tg::Shape{2, 1, 2, 3});
  const auto all = images.to_vector<float>();
  REQUIRE(head.images().to_vector<float>() == std::vector<float>(all.begin(), all.begin() + 12));
  REQUIRE(head.labels().to_vector<std::int64_t>() == std::vector<std::int64_t>{3, 1});
}

TEST_CASE("Dataset::from_bytes rejects bytes that do not fill the images", "[data][errors]") {
  const tg::Tensor labels = tg::from_vector(std::vector<std::int64_t>{0, 1}, {2});
  REQUIRE_THROWS_MATCHES(nn::Dataset::from_bytes(std::vector<std::uint8_t>(11), {2, 1, 2, 3}, 1.0, labels),
                         tg::ShapeError, Catch::Matchers::Message(
                             "Dataset::from_bytes: 11 bytes for images [2, 1, 2, 3] and labels [2]: "
                             "the bytes must fill the images [N, ...] and labels be [N]"));
  REQUIRE_THROWS_AS(nn::Dataset::from_bytes(std::vector<std::uint8_t>(18), {3, 1, 2, 3}, 1.0, labels),
                    tg::ShapeError);
  REQUIRE_THROWS_AS(nn::Dataset::from_bytes(std::vector<std::uint8_t>(12), {2, 1, 2, 3}, 1.0,
                                            tg::zeros({2})),
                    tg::DTypeError);
}
