// Threads: tapes and grad mode are per thread, so independent training loops on two
// threads give exactly the results they give one after the other.
#include <cmath>
#include <cstdint>
#include <exception>
#include <functional>
#include <latch>
#include <random>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <tapegrad/tapegrad.hpp>

#include "support/numeric.hpp"

namespace tg = tapegrad;

namespace {

using tg::testing::random_values;

struct TrainResult {
  std::vector<double> losses;
  std::vector<std::vector<double>> params;
  bool operator==(const TrainResult&) const = default;
};

/// A 4 -> 6 -> 3 tanh MLP trained with mse_loss; data and weights come from `seed` only
/// (never from the shared global generator).
TrainResult train(tg::DType dt, std::uint64_t seed, int steps) {
  auto make = [&](std::size_t n, const tg::Shape& shape, std::uint64_t k, bool param) {
    tg::Tensor t = tg::from_vector(random_values(n, seed * 100 + k), shape, dt);
    if (param) t.set_requires_grad(true);
    return t;
  };
  tg::Tensor x = make(20, {5, 4}, 1, false);
  tg::Tensor target = make(15, {5, 3}, 2, false);
  std::vector<tg::Tensor> params{make(24, {6, 4}, 3, true), make(6, {6}, 4, true),
                                 make(18, {3, 6}, 5, true), make(3, {3}, 6, true)};
  TrainResult result;
  for (int step = 0; step < steps; ++step) {
    tg::Tensor h = tg::tanh(tg::linear(x, params[0], params[1]));
    tg::Tensor loss = tg::mse_loss(tg::linear(h, params[2], params[3]), target);
    loss.backward();
    result.losses.push_back(loss.item<double>());
    tg::NoGradGuard no_grad;
    for (auto& p : params) {
      p.add_(p.grad(), -0.1);
      p.zero_grad();
    }
  }
  for (const auto& p : params) result.params.push_back(p.to_vector<double>());
  return result;
}

/// Runs `fn` on a new thread, passing any exception back to the caller's thread.
class Worker {
 public:
  explicit Worker(std::function<void()> fn)
      : thread_([this, fn = std::move(fn)] {
          try {
            fn();
          } catch (...) {
            error_ = std::current_exception();
          }
        }) {}
  void join() {
    thread_.join();
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::exception_ptr error_;
  std::thread thread_;
};

/// Counts a latch down once: when asked, or at the latest when leaving the scope (so an
/// exception cannot leave the other thread waiting forever).
class CountDownOnExit {
 public:
  explicit CountDownOnExit(std::latch& latch) : latch_(latch) {}
  ~CountDownOnExit() { now(); }
  CountDownOnExit(const CountDownOnExit&) = delete;
  CountDownOnExit& operator=(const CountDownOnExit&) = delete;
  void now() {
    if (!done_) latch_.count_down();
    done_ = true;
  }

 private:
  std::latch& latch_;
  bool done_ = false;
};

}  // namespace

TEST_CASE("two training loops on two threads match running them in turn", "[threads]") {
  for (tg::DType dt : {tg::DType::f64, tg::DType::f32}) {
    INFO("dtype " << tg::dtype_name(dt));
    constexpr int kSteps = 300;
    const auto base = tg::live_tape_records();
    const TrainResult seq_a = train(dt, 1, kSteps);
    const TrainResult seq_b = train(dt, 2, kSteps);
    REQUIRE(seq_a.losses.back() < seq_a.losses.front());
    REQUIRE(seq_b.losses.back() < seq_b.losses.front());
    REQUIRE(seq_a.losses != seq_b.losses);

    TrainResult par_a, par_b;
    Worker a([&] { par_a = train(dt, 1, kSteps); });
    Worker b([&] { par_b = train(dt, 2, kSteps); });
    a.join();
    b.join();
    REQUIRE(par_a == seq_a);
    REQUIRE(par_b == seq_b);
    REQUIRE(tg::live_tape_records() == base);
  }
}

TEST_CASE("a NoGradGuard on one thread does not switch off another", "[threads]") {
  std::latch guard_on(1), other_done(1);
  bool guarded_enabled = true, guarded_recorded = true;
  bool other_enabled = false, other_recorded = false;
  double other_grad = 0;

  Worker guarded([&] {
    CountDownOnExit signal(guard_on);
    tg::Tensor x = tg::ones({2, 3}, tg::DType::f64).set_requires_grad(true);
    tg::NoGradGuard no_grad;
    signal.now();
    other_done.wait();  // the other thread records while this guard is alive
    guarded_enabled = tg::is_grad_enabled();
    guarded_recorded = (x * 2.0).requires_grad();
  });
  Worker other([&] {
    CountDownOnExit signal(other_done);
    guard_on.wait();
    other_enabled = tg::is_grad_enabled();
    tg::Tensor x = tg::full({2, 3}, 1.5, tg::DType::f64).set_requires_grad(true);
    tg::Tensor y = tg::sum(x * x);
    other_recorded = y.requires_grad();
    y.backward();
    other_grad = x.grad().at({1, 2});
  });
  guarded.join();
  other.join();

  REQUIRE(other_enabled);
  REQUIRE(other_recorded);
  REQUIRE(other_grad == 3.0);
  REQUIRE_FALSE(guarded_enabled);
  REQUIRE_FALSE(guarded_recorded);
}

TEST_CASE("a new thread starts with grad mode on whatever the caller's mode", "[threads]") {
  tg::NoGradGuard no_grad;
  REQUIRE_FALSE(tg::is_grad_enabled());
  bool enabled = false, recorded = false;
  Worker w([&] {
    enabled = tg::is_grad_enabled();
    tg::Tensor x = tg::ones({3, 1}).set_requires_grad(true);
    recorded = (x * x).requires_grad();
  });
  w.join();
  REQUIRE(enabled);
  REQUIRE(recorded);
  REQUIRE_FALSE(tg::is_grad_enabled());
}

// Records and tensors come from per-thread caches of small blocks: ones made on a thread
// that has ended, freed on another, must be freed safely (ASan checks the blocks).
TEST_CASE("a graph made on one thread is backpropagated and freed on another", "[threads][memory]") {
  const auto base = tg::live_tape_records();
  tg::Tensor x = tg::ones({4}, tg::DType::f64).set_requires_grad(true);
  tg::Tensor y;
  Worker maker([&] {
    tg::Tensor h = x;
    for (int i = 0; i < 2000; ++i) h = h * 1.0001 + 0.0001;
    y = tg::sum(h);
  });
  maker.join();  // the thread that allocated the records has ended
  Worker user([&] {
    y.backward();
    y = tg::Tensor();  // its records are freed here, on this thread
  });
  user.join();
  REQUIRE(x.grad().at({0}) == Approx(std::pow(1.0001, 2000)));
  REQUIRE(tg::live_tape_records() == base);
}

// A graph that a thread_local (or a global) still holds when its thread ends is destroyed
// after the engine's own thread-local state, so the engine must not use that state then.
// Kept last in the last file: a failure here is a crash at thread exit.
TEST_CASE("a graph held by a thread_local is destroyed safely at thread exit",
          "[threads][memory]") {
  const auto base = tg::live_tape_records();
  Worker w([] {
    thread_local tg::Tensor holder;  // constructed before the engine's thread-locals
    holder = tg::Tensor();
    tg::Tensor x = tg::ones({3}, tg::DType::f64).set_requires_grad(true);
    { tg::Tensor warm = tg::tanh(tg::exp(x)); }  // first use of the engine's thread-locals
    holder = tg::sum(tg::tanh(tg::exp(x * 2.0)));
  });
  w.join();
  REQUIRE(tg::live_tape_records() == base);
}
