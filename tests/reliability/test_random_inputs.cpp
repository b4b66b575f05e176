// Hostile inputs, tried (issue 7): a seeded randomized property test that throws random
// shapes, dtypes and options at every public op and factory. Each call must either return a
// result of the shape an independent computation expects (broadcasting, PyTorch's conv/pool
// output sizes, reshape inference...) or throw a tapegrad::Error; any other exception, a
// wrong shape, or a result where the contract demands an error fails the test, and ASan/UBSan
// catch the rest. Successful floating results are backpropagated with a random upstream
// gradient, and every leaf gradient must have its input's shape and dtype.
//
// TAPEGRAD_FUZZ_SEED=<n> changes the seed, TAPEGRAD_FUZZ_ITERS=<n> the number of rounds and
// TAPEGRAD_FUZZ_VERBOSE=1 prints every call before making it (to find the one a sanitizer
// stops at).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "tapegrad/tapegrad.hpp"

namespace {

namespace tg = tapegrad;
using tg::DType;
using tg::Shape;
using tg::Tensor;
using i64 = std::int64_t;
__extension__ typedef __int128 i128;  // exact products and window sizes of int64 operands

constexpr i64 kMax = std::numeric_limits<i64>::max();
constexpr i64 kMin = std::numeric_limits<i64>::min();

std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

std::string describe(const Tensor& t) {
  if (!t.defined()) return "undefined";
  return fmt::format("{}{}{}", t.dtype(), t.shape(), t.requires_grad() ? "(rg)" : "");
}

/// PyTorch's broadcasting rule, or nullopt when the shapes do not broadcast.
std::optional<std::vector<i64>> broadcast(const std::vector<i64>& a, const std::vector<i64>& b) {
  const std::size_t r = std::max(a.size(), b.size());
  std::vector<i64> out(r);
  for (std::size_t i = 0; i < r; ++i) {
    const i64 da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    const i64 db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (da != db && da != 1 && db != 1) return std::nullopt;
    out[i] = da == 1 ? db : da;
  }
  return out;
}

/// Wraps a dim into [0, rank), or nullopt when out of range.
std::optional<i64> wrap_dim(i64 d, i64 rank) {
  if (d < -rank || d >= rank) return std::nullopt;
  return d < 0 ? d + rank : d;
}

/// Product of sizes in 128 bits (saturating well above any real size), nullopt for a negative.
std::optional<i128> product(const std::vector<i64>& sizes) {
  const i128 cap = i128(1) << 100;
  i128 p = 1;
  for (i64 s : sizes) {
    if (s < 0) return std::nullopt;
    p = s != 0 && p > cap / s ? cap : p * s;
  }
  return p;
}

/// What the contract says about one call.
struct Expect {
  enum Kind { any, shape, error } kind = any;
  std::vector<i64> sizes;
  static Expect anything() { return {}; }
  static Expect must_throw() { return {error, {}}; }
  static Expect result(std::vector<i64> s) { return {shape, std::move(s)}; }
};

class Fuzzer {
 public:
  explicit Fuzzer(std::uint64_t seed) : rng_(seed), verbose_(env_u64("TAPEGRAD_FUZZ_VERBOSE", 0) != 0) {}

  long tried = 0, returned = 0, threw = 0, backward_runs = 0;
  std::vector<std::string> failures;

  // ---- random draws -----------------------------------------------------------------------
  i64 uni(i64 lo, i64 hi) { return std::uniform_int_distribution<i64>(lo, hi)(rng_); }
  bool coin(double p) { return std::bernoulli_distribution(p)(rng_); }
  template <class T>
  T pick(std::initializer_list<T> xs) { return *(xs.begin() + uni(0, i64(xs.size()) - 1)); }

  /// A size for a factory or a reshape: usually small, sometimes 0, negative, huge or extreme.
  i64 wild_size() {
    const i64 r = uni(0, 99);
    if (r < 60) return uni(0, 5);
    if (r < 68) return 0;
    if (r < 78) return pick<i64>({-1, -2, -7, -(i64(1) << 40)});
    if (r < 90) return pick<i64>({i64(1) << 20, i64(1) << 31, i64(1) << 40, i64(1) << 62});
    return pick<i64>({kMax, kMin, kMax / 2 + 1, kMax / 3});
  }
  /// An option value (stride, padding, dilation, kernel): usually 0..4, sometimes hostile.
  i64 wild_option() {
    const i64 r = uni(0, 99);
    if (r < 75) return uni(0, 4);
    if (r < 85) return pick<i64>({-1, -3, kMin});
    return pick<i64>({100, i64(1) << 31, i64(1) << 40, i64(1) << 62, kMax});
  }
  /// A dim argument for a tensor of rank `rank`: usually valid, sometimes out of range.
  i64 wild_dim(i64 rank) {
    const i64 r = uni(0, 99);
    if (r < 80) return rank > 0 ? uni(-rank, rank - 1) : pick<i64>({0, -1});
    if (r < 95) return pick<i64>({rank, -rank - 1, rank + 3});
    return pick<i64>({kMax, kMin});
  }
  double wild_double() {
    const i64 r = uni(0, 99);
    if (r < 70) return std::uniform_real_distribution<double>(-3, 3)(rng_);
    return pick<double>({0.0, -0.0, 1e300, -1e300, std::numeric_limits<double>::infinity(),
                         -std::numeric_limits<double>::infinity(),
                         std::numeric_limits<double>::quiet_NaN(), 1e-300});
  }
  DType dtype() {
    const i64 r = uni(0, 99);
    return r < 45 ? DType::f32 : r < 80 ? DType::f64 : DType::i64;
  }
  std::vector<i64> small_shape(i64 rank, i64 max_size = 4) {
    std::vector<i64> s(static_cast<std::size_t>(rank));
    for (i64& d : s) d = coin(0.08) ? 0 : uni(1, max_size);
    return s;
  }

  /// A valid tensor of the given sizes with random values; floating ones may require grad.
  Tensor tensor(const std::vector<i64>& sizes, DType d) {
    Tensor t = d == DType::i64 ? tg::randint(-3, 7, Shape(sizes)) : tg::randn(Shape(sizes), d);
    if (tg::is_floating(d) && coin(0.6)) t.set_requires_grad(true);
    return t;
  }
  /// The same, undefined now and then.
  Tensor input(const std::vector<i64>& sizes, DType d, double p_undefined = 0.03) {
    return coin(p_undefined) ? Tensor() : tensor(sizes, d);
  }

  // ---- the property ------------------------------------------------------------------------
  /// Runs `call`; it must throw tapegrad::Error or return what `expect` says. A returned
  /// floating tensor that requires grad is backpropagated and the gradients of `inputs` checked.
  void run(const std::string& what, const std::function<Tensor()>& call, const Expect& expect,
           const std::vector<Tensor>& inputs = {}) {
    ++tried;
    if (verbose_) std::fprintf(stderr, "#%ld %s\n", tried, what.c_str());
    Tensor out;
    try {
      out = call();
    } catch (const tg::Error&) {
      ++threw;
      if (expect.kind == Expect::shape) ++refused_valid_;
      return;
    } catch (const std::exception& e) {
      fail(what, fmt::format("threw a non-tapegrad exception: {}", e.what()));
      return;
    } catch (...) {
      fail(what, "threw something that is not a std::exception");
      return;
    }
    ++returned;
    if (expect.kind == Expect::error) {
      fail(what, fmt::format("returned {} where the contract demands an error", describe(out)));
      return;
    }
    if (!out.defined()) return;  // calls whose result is not a tensor
    if (expect.kind == Expect::shape && out.shape().to_vector() != expect.sizes) {
      fail(what, fmt::format("returned shape {}, expected [{}]", out.shape(),
                             fmt::join(expect.sizes, ", ")));
      return;
    }
    backward(what, out, inputs);
  }

  long refused_valid() const { return refused_valid_; }

 private:
  void fail(const std::string& what, const std::string& why) {
    failures.push_back(fmt::format("{}: {}", what, why));
  }

  void backward(const std::string& what, const Tensor& out, const std::vector<Tensor>& inputs) {
    if (!tg::is_floating(out.dtype()) || !out.requires_grad()) return;
    try {
      ++backward_runs;
      out.backward(tg::randn(out.shape(), out.dtype()));
    } catch (const std::exception& e) {
      // The forward accepted these inputs, so its VJP must too.
      fail(what, fmt::format("backward threw: {}", e.what()));
      return;
    }
    for (const Tensor& x : inputs) {
      if (!x.defined() || !x.requires_grad() || !x.is_leaf()) continue;
      const Tensor g = x.grad();
      if (g.defined() && (g.shape() != x.shape() || g.dtype() != x.dtype())) {
        fail(what, fmt::format("gradient {} for input {}", describe(g), describe(x)));
      }
      Tensor(x).set_grad(Tensor());
    }
  }

  std::mt19937_64 rng_;
  bool verbose_;
  long refused_valid_ = 0;
};

std::string sizes_str(const std::vector<i64>& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

}  // namespace

// Each round below picks one op family and builds random arguments for it; the helpers
// build inputs that are valid most of the time so that the checks reach deep into each op.
namespace {

void fuzz_factories(Fuzzer& f) {
  const i64 rank = f.coin(0.03) ? f.uni(9, 10) : f.uni(0, 4);
  std::vector<i64> sizes(static_cast<std::size_t>(rank));
  for (i64& s : sizes) s = f.wild_size();
  const DType d = f.dtype();
  const auto n = product(sizes);
  const bool fits = n && rank <= i64(Shape::kMaxRank) &&
                    *n * i128(tg::dtype_size(d)) <= i128(tg::max_tensor_bytes());
  const bool impossible = !n || rank > i64(Shape::kMaxRank) ||
                          *n * i128(tg::dtype_size(d)) > i128(tg::max_tensor_bytes());
  const Expect e = fits ? Expect::result(sizes) : impossible ? Expect::must_throw() : Expect::anything();
  const std::string args = fmt::format("{}, {}", sizes_str(sizes), d);
  // For random draws an i64 dtype may be refused; the shape rule is the same.
  const Expect e_rand = d == DType::i64 && fits ? Expect::anything() : e;
  switch (f.uni(0, 9)) {
    case 0: f.run("zeros(" + args + ")", [&] { return tg::zeros(Shape(sizes), d); }, e); break;
    case 1: f.run("ones(" + args + ")", [&] { return tg::ones(Shape(sizes), d); }, e); break;
    case 2: {
      const double v = f.wild_double();
      f.run(fmt::format("full({}, {})", args, v), [&] { return tg::full(Shape(sizes), v, d); }, e);
      break;
    }
    case 3: f.run("empty(" + args + ")", [&] { return tg::empty(Shape(sizes), d); }, e); break;
    case 4: f.run("rand(" + args + ")", [&] { return tg::rand(Shape(sizes), d); }, e_rand); break;
    case 5: f.run("randn(" + args + ")", [&] { return tg::randn(Shape(sizes), d); }, e_rand); break;
    case 6: {
      const double lo = f.wild_double(), hi = f.wild_double();
      f.run(fmt::format("uniform({}, {}, {})", args, lo, hi),
            [&] { return tg::uniform(Shape(sizes), lo, hi, d); }, Expect::anything());
      break;
    }
    case 7: {
      const i64 lo = f.coin(0.8) ? f.uni(-5, 5) : f.wild_size();
      const i64 hi = f.coin(0.8) ? f.uni(-5, 5) : f.wild_size();
      const Expect ei = !fits && impossible ? Expect::must_throw() : Expect::anything();
      f.run(fmt::format("randint({}, {}, {})", lo, hi, sizes_str(sizes)), [&] {
        Tensor t = tg::randint(lo, hi, Shape(sizes));
        if (t.shape().to_vector() != sizes) return t;  // run() reports the shape
        if (t.dtype() != DType::i64) throw std::logic_error("randint: not i64");
        if (t.numel() <= 4096) {
          for (i64 v : t.to_vector<i64>()) {
            if (v < lo || v >= hi) throw std::logic_error(fmt::format("randint: value {} outside [{}, {})", v, lo, hi));
          }
        }
        return t;
      }, fits && lo < hi ? Expect::result(sizes) : ei);
      break;
    }
    case 8: {
      // from_vector with a matching or mismatching number of values.
      const i64 count = fits && *n <= 4096 && f.coin(0.7) ? i64(*n) : f.uni(0, 30);
      const bool match = fits && i128(count) == *n;
      const int kind = int(f.uni(0, 2));
      const std::string what = fmt::format("from_vector<{}>({} values, {})",
                                           kind == 0 ? "double" : kind == 1 ? "float" : "i64", count, args);
      f.run(what, [&] {
        if (kind == 0) return tg::from_vector(std::vector<double>(std::size_t(count), 1.5), Shape(sizes), d);
        if (kind == 1) return tg::from_vector(std::vector<float>(std::size_t(count), 1.5f), Shape(sizes), d);
        return tg::from_vector(std::vector<i64>(std::size_t(count), 3), Shape(sizes), d);
      }, match ? Expect::result(sizes) : (impossible || !match) ? Expect::must_throw() : Expect::anything());
      break;
    }
    default: {
      const double start = f.coin(0.7) ? double(f.uni(-5, 5)) : f.wild_double();
      const double end = f.coin(0.7) ? double(f.uni(-5, 20)) : f.wild_double();
      const double step = f.coin(0.6) ? double(f.pick<i64>({1, 2, -1, 3})) : f.wild_double();
      Expect e_ar = Expect::anything();
      if (step == 0 || !std::isfinite(start) || !std::isfinite(end) || !std::isfinite(step)) {
        e_ar = Expect::must_throw();
      } else {
        const double len = std::ceil((end - start) / step);
        if (len > 0 && len * double(tg::dtype_size(d)) <= double(tg::max_tensor_bytes())) {
          e_ar = Expect::result({i64(len)});
        } else if (len > 0) {
          e_ar = Expect::must_throw();
        }
      }
      f.run(fmt::format("arange({}, {}, {}, {})", start, end, step, d),
            [&] { return tg::arange(start, end, step, d); }, e_ar);
    }
  }
}

/// Two shapes that broadcast most of the time.
std::pair<std::vector<i64>, std::vector<i64>> shape_pair(Fuzzer& f) {
  std::vector<i64> a = f.small_shape(f.uni(0, 4));
  std::vector<i64> b = a;
  if (f.coin(0.3)) return {a, f.small_shape(f.uni(0, 4))};
  while (!b.empty() && f.coin(0.3)) b.erase(b.begin());
  for (i64& s : b) if (f.coin(0.3)) s = 1;
  if (f.coin(0.5)) std::swap(a, b);
  return {a, b};
}

void fuzz_elementwise(Fuzzer& f) {
  auto [sa, sb] = shape_pair(f);
  const DType da = f.dtype(), db = f.coin(0.85) ? da : f.dtype();
  const Tensor a = f.input(sa, da), b = f.input(sb, db);
  const std::string args = describe(a) + ", " + describe(b);
  const int op = int(f.uni(0, 5));
  if (op < 4) {
    Expect e = Expect::must_throw();
    if (a.defined() && b.defined() && da == db) {
      if (const auto bs = broadcast(sa, sb)) {
        e = Expect::result(*bs);
        if (da == DType::i64) e.kind = Expect::any;  // i64 arithmetic may be refused
      }
    }
    static const char* names[] = {"add", "sub", "mul", "div"};
    const bool use_operator = f.coin(0.3);
    f.run(fmt::format("{}({}){}", names[op], args, use_operator ? " via operator" : ""), [&] {
      switch (op) {
        case 0: return use_operator ? a + b : tg::add(a, b);
        case 1: return use_operator ? a - b : tg::sub(a, b);
        case 2: return use_operator ? a * b : tg::mul(a, b);
        default: return use_operator ? a / b : tg::div(a, b);
      }
    }, e, {a, b});
  } else {
    const double s = f.wild_double();
    const int which = int(f.uni(0, 9));
    static const char* names[] = {"add", "sub", "mul", "div", "rsub", "rdiv", "s+t", "s-t", "s*t", "s/t"};
    const Expect e = !a.defined() ? Expect::must_throw()
                     : da == DType::i64 ? Expect::anything() : Expect::result(sa);
    f.run(fmt::format("{}({}, {})", names[which], describe(a), s), [&] {
      switch (which) {
        case 0: return tg::add(a, s);
        case 1: return tg::sub(a, s);
        case 2: return tg::mul(a, s);
        case 3: return tg::div(a, s);
        case 4: return tg::rsub(a, s);
        case 5: return tg::rdiv(a, s);
        case 6: return s + a;
        case 7: return s - a;
        case 8: return s * a;
        default: return s / a;
      }
    }, e, {a});
  }
}

void fuzz_unary(Fuzzer& f) {
  const std::vector<i64> s = f.small_shape(f.uni(0, 4));
  const DType d = f.dtype();
  const Tensor x = f.input(s, d);
  const int op = int(f.uni(0, 9));
  const double p = f.wild_double();
  static const char* names[] = {"neg", "exp", "log", "sqrt", "pow", "abs", "relu", "sigmoid", "tanh", "operator-"};
  const Expect e = !x.defined() ? Expect::must_throw() : d == DType::i64 ? Expect::anything() : Expect::result(s);
  f.run(fmt::format("{}({}{})", names[op], describe(x), op == 4 ? fmt::format(", {}", p) : ""), [&] {
    switch (op) {
      case 0: return tg::neg(x);
      case 1: return tg::exp(x);
      case 2: return tg::log(x);
      case 3: return tg::sqrt(x);
      case 4: return tg::pow(x, p);
      case 5: return tg::abs(x);
      case 6: return tg::relu(x);
      case 7: return tg::sigmoid(x);
      case 8: return tg::tanh(x);
      default: return -x;
    }
  }, e, {x});
}

/// torch.matmul's result shape for operands of shapes sa and sb (1-D operands get a 1
/// prepended / appended and removed, batch dims broadcast), or nullopt where it throws.
std::optional<std::vector<i64>> matmul_shape(std::vector<i64> sa, std::vector<i64> sb) {
  if (sa.empty() || sb.empty()) return std::nullopt;
  const bool a_vector = sa.size() == 1, b_vector = sb.size() == 1;
  if (a_vector) sa.insert(sa.begin(), 1);
  if (b_vector) sb.push_back(1);
  if (sa.back() != sb[sb.size() - 2]) return std::nullopt;
  const std::size_t ba = sa.size() - 2, bb = sb.size() - 2, rank = std::max(ba, bb);
  std::vector<i64> out;
  for (std::size_t i = 0; i < rank; ++i) {
    const i64 x = i + ba >= rank ? sa[i + ba - rank] : 1, y = i + bb >= rank ? sb[i + bb - rank] : 1;
    if (x != y && x != 1 && y != 1) return std::nullopt;
    out.push_back(x == 1 ? y : x);
  }
  if (!a_vector) out.push_back(sa[sa.size() - 2]);
  if (!b_vector) out.push_back(sb.back());
  return out;
}

void fuzz_linalg(Fuzzer& f) {
  const i64 m = f.uni(0, 4), k = f.uni(0, 4), n = f.uni(0, 4), batch = f.uni(0, 3);
  const DType d = f.coin(0.9) ? (f.coin(0.5) ? DType::f32 : DType::f64) : DType::i64;
  const DType d2 = f.coin(0.9) ? d : f.dtype();
  const i64 k2 = f.coin(0.85) ? k : k + 1;
  if (f.coin(0.6)) {
    const i64 ra = f.pick<i64>({2, 2, 3, 3, 1, 4}), rb = f.pick<i64>({2, 2, 3, 1, 4});
    std::vector<i64> sa = ra == 1 ? std::vector<i64>{k} : ra == 2 ? std::vector<i64>{m, k}
                        : ra == 3 ? std::vector<i64>{batch, m, k} : std::vector<i64>{2, batch, m, k};
    const i64 batch_b = f.coin(0.85) ? batch : batch + 1;
    std::vector<i64> sb = rb == 1 ? std::vector<i64>{k2} : rb == 2 ? std::vector<i64>{k2, n}
                        : rb == 3 ? std::vector<i64>{batch_b, k2, n} : std::vector<i64>{2, batch_b, k2, n};
    const Tensor a = f.input(sa, d), b = f.input(sb, d2);
    Expect e = Expect::must_throw();
    const auto out = matmul_shape(sa, sb);
    if (a.defined() && b.defined() && d == d2 && d != DType::i64 && out) e = Expect::result(*out);
    if (d == DType::i64 && d2 == DType::i64 && e.kind == Expect::error && a.defined() && b.defined()) {
      e = Expect::anything();  // i64 matmul is not in the contract either way
    }
    f.run(fmt::format("matmul({}, {})", describe(a), describe(b)), [&] { return tg::matmul(a, b); }, e, {a, b});
  } else {
    const i64 rx = f.uni(0, 4);
    std::vector<i64> sx = f.small_shape(rx);
    if (rx > 0) sx.back() = k;
    const i64 out = f.uni(0, 4);
    const std::vector<i64> sw = f.coin(0.9) ? std::vector<i64>{out, k2} : std::vector<i64>{out, k2, 1};
    const std::vector<i64> sbias = f.coin(0.9) ? std::vector<i64>{out} : std::vector<i64>{out + 1};
    const Tensor x = f.input(sx, d), w = f.input(sw, d2);
    const Tensor b = f.coin(0.3) ? Tensor() : f.tensor(sbias, f.coin(0.95) ? d2 : f.dtype());
    Expect e = Expect::must_throw();
    if (x.defined() && w.defined() && rx >= 1 && sw.size() == 2 && k == k2 && d == d2 &&
        d != DType::i64 && (!b.defined() || (b.dtype() == d && sbias[0] == out))) {
      std::vector<i64> so = sx;
      so.back() = out;
      e = Expect::result(so);
    }
    f.run(fmt::format("linear({}, {}, {})", describe(x), describe(w), describe(b)),
          [&] { return tg::linear(x, w, b); }, e, {x, w, b});
  }
}

void fuzz_reductions(Fuzzer& f) {
  const i64 rank = f.uni(0, 4);
  const std::vector<i64> s = f.small_shape(rank);
  const DType d = f.dtype();
  const Tensor x = f.input(s, d);
  const bool keepdim = f.coin(0.5);
  const int op = int(f.uni(0, 4));
  if (op == 0 || op == 1) {
    const bool mean = op == 1;
    const Expect e = !x.defined() ? Expect::must_throw() : d == DType::i64 ? Expect::anything() : Expect::result({});
    f.run(fmt::format("{}({})", mean ? "mean" : "sum", describe(x)),
          [&] { return mean ? tg::mean(x) : tg::sum(x); }, e, {x});
    return;
  }
  if (op == 2 || op == 3) {
    const bool mean = op == 3;
    std::vector<i64> dims(static_cast<std::size_t>(f.uni(0, 3)));
    for (i64& dd : dims) dd = f.wild_dim(rank);
    Expect e = Expect::must_throw();
    if (x.defined()) {
      std::vector<bool> reduced(static_cast<std::size_t>(rank), false);
      bool ok = true;
      for (i64 dd : dims) {
        const auto w = wrap_dim(dd, rank);
        if (rank == 0 && (dd == 0 || dd == -1)) continue;
        if (!w || reduced[std::size_t(*w)]) { ok = false; break; }
        reduced[std::size_t(*w)] = true;
      }
      if (ok) {
        std::vector<i64> so;
        for (std::size_t i = 0; i < s.size(); ++i) {
          if (!reduced[i]) so.push_back(s[i]);
          else if (keepdim) so.push_back(1);
        }
        e = dims.empty() || rank == 0 || d == DType::i64 ? Expect::anything() : Expect::result(so);
      }
    }
    f.run(fmt::format("{}({}, dims=[{}], keepdim={})", mean ? "mean" : "sum", describe(x),
                      fmt::join(dims, ", "), keepdim),
          [&] { return mean ? tg::mean(x, dims, keepdim) : tg::sum(x, dims, keepdim); }, e, {x});
    return;
  }
  const i64 dim = f.wild_dim(rank);
  Expect e = Expect::must_throw();
  if (x.defined()) {
    if (rank == 0 && (dim == 0 || dim == -1)) {
      e = Expect::anything();
    } else if (const auto w = wrap_dim(dim, rank)) {
      std::vector<i64> so = s;
      if (s[std::size_t(*w)] == 0) {
        e = Expect::must_throw();  // max of nothing
      } else {
        if (keepdim) so[std::size_t(*w)] = 1;
        else so.erase(so.begin() + *w);
        e = Expect::result(so);
      }
    }
  }
  f.run(fmt::format("max({}, dim={}, keepdim={})", describe(x), dim, keepdim), [&] {
    tg::MaxResult r = tg::max(x, dim, keepdim);
    if (r.indices.shape() != r.values.shape() || r.indices.dtype() != DType::i64) {
      throw std::logic_error(fmt::format("max: indices {} do not match values {}",
                                         describe(r.indices), describe(r.values)));
    }
    return r.values;
  }, e, {x});
}

void fuzz_shapes(Fuzzer& f) {
  const i64 rank = f.uni(0, 4);
  const std::vector<i64> s = f.small_shape(rank);
  const Tensor x = f.input(s, f.dtype());
  const i64 numel = std::accumulate(s.begin(), s.end(), i64(1), std::multiplies<>());
  const int op = int(f.uni(0, 3));
  if (op == 0) {
    // A target shape: a reordering of the sizes (maybe with a -1), or wild sizes.
    std::vector<i64> t = s;
    std::shuffle(t.begin(), t.end(), std::mt19937_64(std::uint64_t(f.uni(0, 1 << 30))));
    if (f.coin(0.3)) t.push_back(1);
    if (!t.empty() && f.coin(0.4)) t[std::size_t(f.uni(0, i64(t.size()) - 1))] = -1;
    if (f.coin(0.3)) {
      t.resize(std::size_t(f.uni(0, 4)));
      for (i64& v : t) v = f.coin(0.3) ? -1 : f.wild_size();
    }
    Expect e = Expect::must_throw();
    if (x.defined()) {
      const auto minus = std::count(t.begin(), t.end(), i64(-1));
      const bool other_negative = std::any_of(t.begin(), t.end(), [](i64 v) { return v < -1; });
      std::vector<i64> known = t;
      std::erase(known, i64(-1));
      const auto p = product(known);
      // A product of the given sizes past int64 is refused even when a -1 could absorb it.
      if (minus <= 1 && !other_negative && p && *p <= i128(std::numeric_limits<i64>::max()) &&
          t.size() <= Shape::kMaxRank) {
        std::vector<i64> inferred = t;
        if (minus == 0 && *p == numel) e = Expect::result(inferred);
        if (minus == 1 && *p != 0 && numel % i64(*p) == 0) {
          *std::find(inferred.begin(), inferred.end(), i64(-1)) = numel / i64(*p);
          e = Expect::result(inferred);
        }
      }
    }
    const bool method = f.coin(0.3);
    f.run(fmt::format("reshape({}, {}){}", describe(x), sizes_str(t), method ? " via Tensor::view" : ""),
          [&] { return method ? x.view(Shape(t)) : tg::reshape(x, Shape(t)); }, e, {x});
  } else if (op == 1) {
    const i64 a = f.wild_dim(rank), b = f.wild_dim(rank);
    Expect e = Expect::must_throw();
    if (x.defined()) {
      const auto wa = wrap_dim(a, rank), wb = wrap_dim(b, rank);
      if (rank == 0) {
        e = Expect::anything();
      } else if (wa && wb && *wa <= *wb) {
        std::vector<i64> so(s.begin(), s.begin() + *wa);
        so.push_back(std::accumulate(s.begin() + *wa, s.begin() + *wb + 1, i64(1), std::multiplies<>()));
        so.insert(so.end(), s.begin() + *wb + 1, s.end());
        e = Expect::result(so);
      }
    }
    f.run(fmt::format("flatten({}, {}, {})", describe(x), a, b), [&] { return tg::flatten(x, a, b); }, e, {x});
  } else if (op == 2) {
    const i64 a = f.wild_dim(rank), b = f.wild_dim(rank);
    Expect e = Expect::must_throw();
    if (x.defined()) {
      const auto wa = wrap_dim(a, rank), wb = wrap_dim(b, rank);
      if (rank == 0) {
        e = Expect::anything();
      } else if (wa && wb) {
        std::vector<i64> so = s;
        std::swap(so[std::size_t(*wa)], so[std::size_t(*wb)]);
        e = Expect::result(so);
      }
    }
    f.run(fmt::format("transpose({}, {}, {})", describe(x), a, b), [&] { return tg::transpose(x, a, b); }, e, {x});
  } else {
    std::vector<i64> dims(static_cast<std::size_t>(rank));
    std::iota(dims.begin(), dims.end(), i64(0));
    std::shuffle(dims.begin(), dims.end(), std::mt19937_64(std::uint64_t(f.uni(0, 1 << 30))));
    for (i64& dd : dims) if (f.coin(0.2)) dd -= rank;
    if (f.coin(0.15)) dims.push_back(0);
    if (!dims.empty() && f.coin(0.15)) dims.pop_back();
    if (!dims.empty() && f.coin(0.1)) dims[0] = f.wild_dim(rank);
    Expect e = Expect::must_throw();
    if (x.defined() && i64(dims.size()) == rank) {
      std::vector<bool> seen(std::size_t(rank), false);
      std::vector<i64> so;
      bool ok = true;
      for (i64 dd : dims) {
        const auto w = wrap_dim(dd, rank);
        if (!w || seen[std::size_t(*w)]) { ok = false; break; }
        seen[std::size_t(*w)] = true;
        so.push_back(s[std::size_t(*w)]);
      }
      if (ok) e = Expect::result(so);
    }
    f.run(fmt::format("permute({}, [{}])", describe(x), fmt::join(dims, ", ")),
          [&] { return tg::permute(x, dims); }, e, {x});
  }
}

void fuzz_softmax_losses(Fuzzer& f) {
  const int op = int(f.uni(0, 4));
  const DType d = f.coin(0.9) ? (f.coin(0.5) ? DType::f32 : DType::f64) : DType::i64;
  if (op <= 1) {
    const i64 rank = f.uni(0, 4);
    const std::vector<i64> s = f.small_shape(rank);
    const Tensor x = f.input(s, d);
    const i64 dim = f.wild_dim(rank);
    Expect e = Expect::must_throw();
    if (x.defined()) {
      if (rank == 0 || d == DType::i64) e = Expect::anything();
      else if (wrap_dim(dim, rank)) e = Expect::result(s);
    }
    f.run(fmt::format("{}({}, {})", op == 0 ? "softmax" : "log_softmax", describe(x), dim),
          [&] { return op == 0 ? tg::softmax(x, dim) : tg::log_softmax(x, dim); }, e, {x});
  } else if (op <= 3) {
    const i64 n = f.uni(0, 5), c = f.coin(0.1) ? 0 : f.uni(1, 5);
    const std::vector<i64> sx = f.coin(0.9) ? std::vector<i64>{n, c} : f.small_shape(f.pick<i64>({0, 1, 3}));
    const Tensor x = f.input(sx, d);
    const std::vector<i64> st = f.coin(0.9) ? std::vector<i64>{n} : std::vector<i64>{n + 1};
    const DType dt = f.coin(0.85) ? DType::i64 : f.dtype();
    std::vector<i64> labels(static_cast<std::size_t>(st[0]));
    bool in_range = true;
    for (i64& v : labels) {
      v = f.coin(0.9) && c > 0 ? f.uni(0, c - 1) : f.pick<i64>({-1, c, c + 5, -100, kMax, kMin});
      in_range = in_range && ((v >= 0 && v < c) || v == -100);  // -100: the default ignore_index
    }
    Tensor target = f.coin(0.03) ? Tensor() : tg::from_vector(labels, Shape(st), dt);
    const auto red = f.pick<tg::Reduction>({tg::Reduction::none, tg::Reduction::mean, tg::Reduction::sum});
    Expect e = Expect::must_throw();
    if (x.defined() && target.defined() && d != DType::i64 && dt == DType::i64 &&
        sx.size() == 2 && st[0] == n && in_range) {
      e = Expect::result(red == tg::Reduction::none ? std::vector<i64>{n} : std::vector<i64>{});
    } else if (x.defined() && target.defined() && sx.size() != 2 && d != DType::i64 && dt == DType::i64 && in_range) {
      e = Expect::anything();  // other ranks are outside the documented contract
    }
    const bool ce = op == 3;
    f.run(fmt::format("{}({}, target {} = [{}], reduction={})", ce ? "cross_entropy" : "nll_loss",
                      describe(x), describe(target), fmt::join(labels, ", "), int(red)),
          [&] { return ce ? tg::cross_entropy(x, target, red) : tg::nll_loss(x, target, red); }, e, {x});
  } else {
    auto [sa, sb] = shape_pair(f);
    if (f.coin(0.6)) sb = sa;
    const DType db = f.coin(0.9) ? d : f.dtype();
    const Tensor a = f.input(sa, d), b = f.input(sb, db);
    const auto red = f.pick<tg::Reduction>({tg::Reduction::none, tg::Reduction::mean, tg::Reduction::sum});
    Expect e = Expect::must_throw();
    if (a.defined() && b.defined() && sa == sb && d == db) {
      e = d == DType::i64 ? Expect::anything()
                          : Expect::result(red == tg::Reduction::none ? sa : std::vector<i64>{});
    }
    f.run(fmt::format("mse_loss({}, {}, reduction={})", describe(a), describe(b), int(red)),
          [&] { return tg::mse_loss(a, b, red); }, e, {a, b});
  }
}

void fuzz_dropout(Fuzzer& f) {
  const std::vector<i64> s = f.small_shape(f.uni(0, 4));
  const DType d = f.dtype();
  const Tensor x = f.input(s, d);
  const double p = f.coin(0.6) ? f.pick<double>({0.0, 0.5, 1.0, 0.25}) : f.wild_double();
  const bool train = f.coin(0.7);
  const bool p_ok = p >= 0 && p <= 1;
  Expect e = Expect::must_throw();
  if (x.defined() && (p_ok || !train)) e = d == DType::i64 || !p_ok ? Expect::anything() : Expect::result(s);
  f.run(fmt::format("dropout({}, p={}, train={})", describe(x), p, train),
        [&] { return tg::dropout(x, p, train); }, e, {x});
}

/// PyTorch's output size of one axis of conv/pool, in 128 bits; nullopt when no window fits.
std::optional<i64> window_out(i64 in, i64 kernel, i64 stride, i64 pad_begin, i64 pad_end,
                              i64 dilation, bool ceil_mode) {
  const i128 numerator = i128(in) + pad_begin + pad_end - (i128(dilation) * (kernel - 1) + 1);
  if (numerator < 0) return std::nullopt;
  i128 out = (numerator + (ceil_mode ? stride - 1 : 0)) / stride + 1;
  if (ceil_mode && (out - 1) * stride >= i128(in) + pad_begin) --out;
  if (out <= 0 || out > kMax) return std::nullopt;
  return i64(out);
}

bool fits_cap(const std::vector<i64>& sizes, DType d) {
  const auto n = product(sizes);
  return n && *n * i128(tg::dtype_size(d)) <= i128(tg::max_tensor_bytes());
}

void fuzz_conv2d(Fuzzer& f) {
  const i64 groups = f.coin(0.85) ? f.pick<i64>({1, 1, 2, 3}) : f.wild_option();
  const i64 g = groups > 0 && groups < 8 ? groups : 1;
  const i64 cin = g * f.uni(1, 2), cout = g * f.uni(1, 2);
  const i64 n = f.uni(0, 2), h = f.coin(0.05) ? 0 : f.uni(1, 8), w = f.coin(0.05) ? 0 : f.uni(1, 8);
  const i64 kh = f.coin(0.05) ? 0 : f.uni(1, 5), kw = f.coin(0.05) ? 0 : f.uni(1, 5);
  const bool batched = f.coin(0.8);
  std::vector<i64> sx = batched ? std::vector<i64>{n, cin, h, w} : std::vector<i64>{cin, h, w};
  if (f.coin(0.05)) sx = f.small_shape(f.pick<i64>({2, 5}));
  std::vector<i64> sw{cout, cin / g, kh, kw};
  if (f.coin(0.08)) sw[1] += 1;
  if (f.coin(0.03)) sw.pop_back();
  const DType d = f.coin(0.93) ? (f.coin(0.5) ? DType::f32 : DType::f64) : DType::i64;
  const DType dw = f.coin(0.95) ? d : f.dtype();
  const Tensor x = f.input(sx, d), wt = f.input(sw, dw);
  const bool has_bias = f.coin(0.6);
  const std::vector<i64> sb{f.coin(0.93) ? cout : cout + 1};
  const DType dbias = f.coin(0.95) ? dw : f.dtype();
  const Tensor b = has_bias ? f.tensor(sb, dbias) : Tensor();

  tg::Conv2dOptions o;
  auto opt = [&](i64 usual_lo, i64 usual_hi) { return f.coin(0.8) ? f.uni(usual_lo, usual_hi) : f.wild_option(); };
  o.stride = {opt(1, 3), opt(1, 3)};
  o.padding = {opt(0, 3), opt(0, 3)};
  o.dilation = {opt(1, 3), opt(1, 3)};
  o.groups = groups;
  o.padding_mode = f.pick<tg::ConvPadding>({tg::ConvPadding::explicit_sizes, tg::ConvPadding::explicit_sizes,
                                            tg::ConvPadding::same, tg::ConvPadding::valid});
  if (o.padding_mode == tg::ConvPadding::same && f.coin(0.6)) o.stride = {1, 1};

  Expect e = Expect::must_throw();
  const bool types_ok = x.defined() && wt.defined() && d != DType::i64 && d == dw && (!has_bias || dbias == d);
  if (types_ok && (sx.size() == 3 || sx.size() == 4) && sw.size() == 4) {
    const std::size_t r = sx.size();
    const i64 c = sx[r - 3];
    bool ok = groups > 0 && c % groups == 0 && sw[0] % groups == 0 && sw[1] * groups == c &&
              (!has_bias || sb[0] == sw[0]);
    std::vector<i64> so;
    if (r == 4) so.push_back(sx[0]);
    so.push_back(sw[0]);
    for (int axis = 0; axis < 2 && ok; ++axis) {
      const i64 in = sx[r - 2 + std::size_t(axis)], k = sw[2 + std::size_t(axis)];
      const i64 s = o.stride[std::size_t(axis)], dl = o.dilation[std::size_t(axis)];
      i64 pb = o.padding[std::size_t(axis)], pe = pb;
      ok = k > 0 && s > 0 && dl > 0;
      if (!ok) break;
      if (o.padding_mode == tg::ConvPadding::same) {
        if (o.stride[0] != 1 || o.stride[1] != 1) { ok = false; break; }
        const i128 total = i128(dl) * (k - 1);
        if (total > kMax) { ok = false; break; }
        pb = i64(total / 2);
        pe = i64(total - pb);
      } else if (o.padding_mode == tg::ConvPadding::valid) {
        pb = pe = 0;
      } else if (pb < 0) {
        ok = false;
        break;
      }
      const auto out = window_out(in, k, s, pb, pe, dl, false);
      if (!out) { ok = false; break; }
      so.push_back(*out);
    }
    if (ok) e = fits_cap(so, d) ? Expect::result(so) : Expect::must_throw();
    // Empty channel counts are outside what we can predict: accept either outcome.
    if (ok && (sx[r - 3] == 0 || sw[0] == 0)) e = Expect::anything();
  }
  const char* mode = o.padding_mode == tg::ConvPadding::same ? "same"
                     : o.padding_mode == tg::ConvPadding::valid ? "valid" : "explicit";
  f.run(fmt::format("conv2d({}, {}, {}, stride=[{}], padding=[{}], dilation=[{}], groups={}, mode={})",
                    describe(x), describe(wt), describe(b), fmt::join(o.stride, ", "),
                    fmt::join(o.padding, ", "), fmt::join(o.dilation, ", "), o.groups, mode),
        [&] { return tg::conv2d(x, wt, b, o); }, e, {x, wt, b});
}

void fuzz_pool(Fuzzer& f) {
  const bool avg = f.coin(0.45);
  const i64 n = f.uni(0, 2), c = f.uni(0, 3);
  const i64 h = f.coin(0.05) ? 0 : f.uni(1, 9), w = f.coin(0.05) ? 0 : f.uni(1, 9);
  std::vector<i64> sx = f.coin(0.75) ? std::vector<i64>{n, c, h, w} : std::vector<i64>{c, h, w};
  if (f.coin(0.05)) sx = f.small_shape(f.pick<i64>({2, 5}));
  const DType d = f.coin(0.93) ? (f.coin(0.5) ? DType::f32 : DType::f64) : DType::i64;
  const Tensor x = f.input(sx, d);
  auto opt = [&](i64 lo, i64 hi) { return f.coin(0.85) ? f.uni(lo, hi) : f.wild_option(); };
  const std::array<i64, 2> kernel{opt(1, 4), opt(1, 4)};
  std::array<i64, 2> stride{opt(1, 3), opt(1, 3)};
  if (f.coin(0.2)) stride = {0, 0};
  if (f.coin(0.05)) stride = {0, 2};
  const std::array<i64, 2> padding{opt(0, 2), opt(0, 2)};
  const std::array<i64, 2> dilation = avg ? std::array<i64, 2>{1, 1} : std::array<i64, 2>{opt(1, 2), opt(1, 2)};
  const bool ceil_mode = f.coin(0.4);
  const bool count_include_pad = f.coin(0.5);
  std::optional<i64> divisor;
  if (avg && f.coin(0.2)) divisor = f.coin(0.7) ? f.uni(-2, 5) : f.wild_option();

  Expect e = Expect::must_throw();
  if (x.defined() && (sx.size() == 3 || sx.size() == 4)) {
    const std::size_t r = sx.size();
    const std::array<i64, 2> st = stride[0] == 0 && stride[1] == 0 ? kernel : stride;
    bool ok = true;
    std::vector<i64> so(sx.begin(), sx.end() - 2);
    for (std::size_t a = 0; a < 2 && ok; ++a) {
      ok = kernel[a] > 0 && st[a] > 0 && dilation[a] > 0 && padding[a] >= 0 && padding[a] <= kernel[a] / 2;
      if (!ok) break;
      const auto out = window_out(sx[r - 2 + a], kernel[a], st[a], padding[a], padding[a], dilation[a], ceil_mode);
      if (!out) { ok = false; break; }
      so.push_back(*out);
    }
    if (ok && divisor && *divisor == 0) ok = false;
    if (ok) {
      e = d == DType::i64 ? Expect::anything() : fits_cap(so, d) ? Expect::result(so) : Expect::must_throw();
      // Empty planes or an empty H/W: PyTorch refuses some of them; accept either outcome.
      if (std::find(sx.begin(), sx.end(), i64(0)) != sx.end()) e.kind = Expect::any;
    }
  }
  if (avg) {
    tg::AvgPool2dOptions o;
    o.kernel_size = kernel;
    o.stride = stride;
    o.padding = padding;
    o.ceil_mode = ceil_mode;
    o.count_include_pad = count_include_pad;
    o.divisor_override = divisor;
    f.run(fmt::format("avg_pool2d({}, kernel=[{}], stride=[{}], padding=[{}], ceil_mode={}, "
                      "count_include_pad={}, divisor={})", describe(x), fmt::join(kernel, ", "),
                      fmt::join(stride, ", "), fmt::join(padding, ", "), ceil_mode, count_include_pad,
                      divisor ? fmt::format("{}", *divisor) : "none"),
          [&] { return tg::avg_pool2d(x, o); }, e, {x});
  } else {
    tg::MaxPool2dOptions o;
    o.kernel_size = kernel;
    o.stride = stride;
    o.padding = padding;
    o.dilation = dilation;
    o.ceil_mode = ceil_mode;
    const bool with_indices = f.coin(0.4);
    f.run(fmt::format("max_pool2d{}({}, kernel=[{}], stride=[{}], padding=[{}], dilation=[{}], ceil_mode={})",
                      with_indices ? "_with_indices" : "", describe(x), fmt::join(kernel, ", "),
                      fmt::join(stride, ", "), fmt::join(padding, ", "), fmt::join(dilation, ", "), ceil_mode),
          [&] {
            if (!with_indices) return tg::max_pool2d(x, o);
            tg::MaxPoolResult r = tg::max_pool2d_with_indices(x, o);
            if (r.indices.shape() != r.values.shape() || r.indices.dtype() != DType::i64) {
              throw std::logic_error("max_pool2d_with_indices: indices " + describe(r.indices) +
                                     " do not match values " + describe(r.values));
            }
            return r.values;
          }, e, {x});
  }
}

void fuzz_adaptive_pool(Fuzzer& f) {
  const i64 n = f.uni(0, 2), c = f.coin(0.05) ? 0 : f.uni(1, 3);
  const i64 h = f.coin(0.05) ? 0 : f.uni(1, 9), w = f.coin(0.05) ? 0 : f.uni(1, 9);
  std::vector<i64> sx = f.coin(0.75) ? std::vector<i64>{n, c, h, w} : std::vector<i64>{c, h, w};
  if (f.coin(0.05)) sx = f.small_shape(f.pick<i64>({0, 1, 2, 5}));
  const DType d = f.coin(0.93) ? (f.coin(0.5) ? DType::f32 : DType::f64) : DType::i64;
  const Tensor x = f.input(sx, d);
  // Output sizes below, equal to and above the input's, now and then 0, negative or huge.
  auto size = [&] { return f.coin(0.85) ? f.uni(1, 10) : f.wild_option(); };
  const std::array<i64, 2> out{size(), size()};
  const std::size_t r = sx.size();
  Expect e = Expect::must_throw();
  if (x.defined() && d != DType::i64 && (r == 3 || r == 4) && sx[r - 3] > 0 && sx[r - 2] > 0 && sx[r - 1] > 0 &&
      out[0] > 0 && out[1] > 0 && std::max(out[0], out[1]) <= std::numeric_limits<std::int32_t>::max()) {
    std::vector<i64> so(sx.begin(), sx.end() - 2);
    so.push_back(out[0]);
    so.push_back(out[1]);
    e = fits_cap(so, d) ? Expect::result(so) : Expect::must_throw();
  }
  const i64 op = f.uni(0, 2);
  const char* name = op == 0 ? "adaptive_avg_pool2d" : op == 1 ? "adaptive_max_pool2d" : "adaptive_max_pool2d_with_indices";
  f.run(fmt::format("{}({}, output_size=[{}])", name, describe(x), fmt::join(out, ", ")),
        [&] {
          if (op == 0) return tg::adaptive_avg_pool2d(x, out);
          if (op == 1) return tg::adaptive_max_pool2d(x, out);
          tg::MaxPoolResult res = tg::adaptive_max_pool2d_with_indices(x, out);
          if (res.indices.shape() != res.values.shape() || res.indices.dtype() != DType::i64) {
            throw std::logic_error("adaptive_max_pool2d_with_indices: indices " + describe(res.indices) +
                                   " do not match values " + describe(res.values));
          }
          return res.values;
        },
        e, {x});
}

void fuzz_batch_norm(Fuzzer& f) {
  const i64 n = f.uni(0, 3), c = f.uni(0, 3), h = f.uni(0, 3), w = f.uni(1, 3);
  std::vector<i64> sx{n, c, h, w};
  if (f.coin(0.07)) sx = f.small_shape(f.pick<i64>({2, 3, 5}));
  const DType d = f.coin(0.93) ? (f.coin(0.5) ? DType::f32 : DType::f64) : DType::i64;
  const Tensor x = f.input(sx, d);
  auto param = [&](double p_defined) {
    if (!f.coin(p_defined)) return Tensor();
    const std::vector<i64> s = f.coin(0.93) ? std::vector<i64>{c} : std::vector<i64>{c + 1};
    const DType dp = f.coin(0.95) ? d : f.dtype();
    Tensor t = tg::randn(Shape(s), dp == DType::i64 ? DType::f32 : dp);
    if (dp == DType::i64) t = tg::zeros(Shape(s), DType::i64);
    return t;
  };
  const Tensor rm = param(0.8), rv = param(0.8);
  Tensor wt = param(0.6), bias = param(0.6);
  if (wt.defined() && tg::is_floating(wt.dtype()) && f.coin(0.5)) wt.set_requires_grad(true);
  if (bias.defined() && tg::is_floating(bias.dtype()) && f.coin(0.5)) bias.set_requires_grad(true);
  const bool training = f.coin(0.5);
  const double momentum = f.coin(0.85) ? 0.1 : f.wild_double();
  const double eps = f.coin(0.85) ? 1e-5 : f.wild_double();
  Expect e = Expect::must_throw();
  const i64 ch = sx.size() == 4 ? sx[1] : -1;
  auto fits = [&](const Tensor& t) { return !t.defined() || (t.dtype() == d && t.shape() == Shape{ch}); };
  if (x.defined() && sx.size() == 4 && d != DType::i64 && fits(rm) && fits(rv) && fits(wt) && fits(bias) &&
      (training || (rm.defined() && rv.defined()))) {
    // Training on one value per channel, a bad eps or momentum: PyTorch refuses some; either is fine.
    e = Expect::result(sx);
    if (std::isnan(eps) || eps < 0 || !std::isfinite(momentum) || sx[0] * sx[2] * sx[3] <= 1) e.kind = Expect::any;
  }
  f.run(fmt::format("batch_norm2d({}, running_mean {}, running_var {}, weight {}, bias {}, training={}, "
                    "momentum={}, eps={})", describe(x), describe(rm), describe(rv), describe(wt),
                    describe(bias), training, momentum, eps),
        [&] { return tg::batch_norm2d(x, rm, rv, wt, bias, training, momentum, eps); }, e, {x, wt, bias});
}

void fuzz_norms(Fuzzer& f) {
  const DType d = f.coin(0.93) ? (f.coin(0.5) ? DType::f32 : DType::f64) : DType::i64;
  const double eps = f.coin(0.85) ? 1e-5 : f.wild_double();
  const bool good_eps = eps >= 0 && std::isfinite(eps);
  // A weight, bias or running statistic of `shape`, now and then of a wrong size or dtype.
  auto param = [&](const std::vector<i64>& shape, double p_defined, bool grad) {
    if (!f.coin(p_defined)) return Tensor();
    std::vector<i64> s = shape;
    if (f.coin(0.07)) s.push_back(2);
    const DType dp = f.coin(0.95) ? d : f.dtype();
    Tensor t = dp == DType::i64 ? tg::zeros(Shape(s), DType::i64) : tg::rand(Shape(s), dp) + 0.5;
    if (grad && tg::is_floating(dp) && f.coin(0.5)) t.set_requires_grad(true);
    return t;
  };
  auto fits = [&](const Tensor& t, const std::vector<i64>& shape) {
    return !t.defined() || (t.dtype() == d && t.shape().to_vector() == shape);
  };
  std::vector<i64> sx = f.small_shape(f.uni(1, 4));
  const Tensor x = f.input(sx, d);
  const bool floating_x = x.defined() && d != DType::i64;
  const i64 op = f.uni(0, 2);
  if (op == 0) {
    // normalized_shape: usually x's last k dims, sometimes empty, longer than x or off by one.
    const i64 k = f.uni(0, i64(sx.size()));
    std::vector<i64> normalized(sx.end() - k, sx.end());
    if (f.coin(0.05)) normalized.insert(normalized.begin(), 2);
    if (f.coin(0.05) && !normalized.empty()) normalized.back() += 1;
    const Tensor w = param(normalized, 0.6, true), b = param(normalized, 0.6, true);
    const bool trailing = normalized.size() <= sx.size() &&
                          std::equal(normalized.begin(), normalized.end(), sx.end() - i64(normalized.size()));
    const bool ok = floating_x && !normalized.empty() && trailing && fits(w, normalized) &&
                    fits(b, normalized) && good_eps;
    f.run(fmt::format("layer_norm({}, normalized_shape {}, weight {}, bias {}, eps={})", describe(x),
                      sizes_str(normalized), describe(w), describe(b), eps),
          [&] { return tg::layer_norm(x, Shape(normalized), w, b, eps); },
          ok ? Expect::result(sx) : Expect::must_throw(), {x, w, b});
  } else if (op == 1) {
    const i64 c = sx.size() >= 2 ? sx[1] : 1;
    const i64 groups = f.coin(0.85) ? f.pick<i64>({1, std::max<i64>(c, 1), 2}) : f.wild_option();
    const std::vector<i64> channels{c};
    const Tensor w = param(channels, 0.6, true), b = param(channels, 0.6, true);
    const bool ok = floating_x && sx.size() >= 2 && groups > 0 && c % groups == 0 &&
                    fits(w, channels) && fits(b, channels) && good_eps;
    f.run(fmt::format("group_norm({}, num_groups={}, weight {}, bias {}, eps={})", describe(x), groups,
                      describe(w), describe(b), eps),
          [&] { return tg::group_norm(x, groups, w, b, eps); },
          ok ? Expect::result(sx) : Expect::must_throw(), {x, w, b});
  } else {
    const i64 c = sx.size() >= 2 ? sx[1] : 1;
    const std::vector<i64> channels{c};
    const Tensor rm = param(channels, 0.7, false), rv = param(channels, 0.7, false);
    const Tensor w = param(channels, 0.6, true), b = param(channels, 0.6, true);
    const bool training = f.coin(0.5);
    const double momentum = f.coin(0.85) ? 0.1 : f.wild_double();
    const i64 values_per_channel = sx.size() >= 2 ? sx[0] * (sx.size() == 3 ? sx[2] : 1) : 0;
    Expect e = Expect::must_throw();
    if (floating_x && (sx.size() == 2 || sx.size() == 3) && fits(rm, channels) && fits(rv, channels) &&
        fits(w, channels) && fits(b, channels) && rm.defined() == rv.defined() &&
        (training || rm.defined()) && good_eps && momentum >= 0 && momentum <= 1 &&
        (!training || values_per_channel > 1)) {
      e = Expect::result(sx);
    }
    f.run(fmt::format("batch_norm({}, running_mean {}, running_var {}, weight {}, bias {}, training={}, "
                      "momentum={}, eps={})", describe(x), describe(rm), describe(rv), describe(w),
                      describe(b), training, momentum, eps),
          [&] { return tg::batch_norm(x, rm, rv, w, b, training, momentum, eps); }, e, {x, w, b});
  }
}

void fuzz_tensor_methods(Fuzzer& f) {
  const i64 rank = f.uni(0, 4);
  const std::vector<i64> s = f.small_shape(rank);
  const DType d = f.dtype();
  const Tensor x = f.input(s, d);
  switch (f.uni(0, 4)) {
    case 0: {
      const DType to = f.dtype();
      f.run(fmt::format("Tensor::to({}, {})", describe(x), to), [&] { return x.to(to); },
            x.defined() ? Expect::result(s) : Expect::must_throw(), {x});
      break;
    }
    case 1: {
      std::vector<i64> idx(std::size_t(f.coin(0.9) ? rank : f.uni(0, 5)));
      bool ok = x.defined() && i64(idx.size()) == rank;
      for (std::size_t i = 0; i < idx.size(); ++i) {
        const i64 size = i < s.size() ? s[i] : 1;
        idx[i] = f.coin(0.85) && size > 0 ? f.uni(-size, size - 1) : f.wild_dim(size);
        ok = ok && i < s.size() && idx[i] >= -size && idx[i] < size;
      }
      f.run(fmt::format("Tensor::at({}, [{}])", describe(x), fmt::join(idx, ", ")), [&] {
        // at() takes an initializer_list: spell out the ranks we generate.
        switch (idx.size()) {
          case 0: (void)x.at({}); break;
          case 1: (void)x.at({idx[0]}); break;
          case 2: (void)x.at({idx[0], idx[1]}); break;
          case 3: (void)x.at({idx[0], idx[1], idx[2]}); break;
          case 4: (void)x.at({idx[0], idx[1], idx[2], idx[3]}); break;
          default: (void)x.at({idx[0], idx[1], idx[2], idx[3], idx[4]});
        }
        return Tensor();
      }, ok ? Expect::anything() : Expect::must_throw());
      break;
    }
    case 2: {
      const i64 dim = f.wild_dim(rank);
      const bool ok = x.defined() && wrap_dim(dim, rank).has_value();
      f.run(fmt::format("Tensor::size({}, {})", describe(x), dim), [&] {
        const i64 got = x.size(dim);
        const auto w = wrap_dim(dim, rank);
        if (!w || got != s[std::size_t(*w)]) throw std::logic_error(fmt::format("size: returned {}", got));
        return Tensor();
      }, ok ? Expect::anything() : Expect::must_throw());
      break;
    }
    case 3: {
      const bool one = x.defined() && std::accumulate(s.begin(), s.end(), i64(1), std::multiplies<>()) == 1;
      f.run(fmt::format("Tensor::item({})", describe(x)), [&] { (void)x.item<double>(); return Tensor(); },
            one ? Expect::anything() : Expect::must_throw());
      break;
    }
    default: {
      const Tensor y = f.input(s, f.dtype());
      f.run(fmt::format("zeros_like/ones_like/clone({}, {})", describe(x), describe(y)), [&] {
        (void)tg::zeros_like(y);
        (void)tg::ones_like(y);
        return x.clone();
      }, x.defined() && y.defined() ? Expect::result(s) : Expect::must_throw(), {x});
    }
  }
}

void fuzz_layers(Fuzzer& f) {
  namespace nn = tg::nn;
  const i64 a = f.coin(0.7) ? f.uni(0, 6) : f.wild_size(), b = f.coin(0.7) ? f.uni(0, 6) : f.wild_size();
  const bool bias = f.coin(0.5);
  switch (f.uni(0, 3)) {
    case 0: {
      const bool ok = a >= 0 && b >= 0 && fits_cap({b, a}, DType::f32);
      const bool bad = a < 0 || b < 0 || !product({a, b}) || !fits_cap({b, a}, DType::f32);
      f.run(fmt::format("nn::linear({}, {}, bias={})", a, b, bias),
            [&] { return nn::linear(a, b, bias)->weight(); },
            ok ? Expect::result({b, a}) : bad ? Expect::must_throw() : Expect::anything());
      break;
    }
    case 1: {
      const i64 k = f.coin(0.8) ? f.uni(1, 4) : f.wild_option();
      nn::Conv2dOptions o;
      o.groups = f.coin(0.8) ? 1 : f.wild_option();
      o.bias = bias;
      const bool ok = a > 0 && b > 0 && k > 0 && o.groups > 0 && a % o.groups == 0 && b % o.groups == 0 &&
                      fits_cap({b, a / o.groups, k, k}, DType::f32);
      const bool bad = a < 0 || b < 0 || k <= 0 || o.groups <= 0 || (a > 0 && a % o.groups != 0) ||
                       (b > 0 && b % o.groups != 0) || (a >= 0 && b >= 0 && o.groups > 0 && k > 0 &&
                                                        !fits_cap({b, a / o.groups, k, k}, DType::f32));
      f.run(fmt::format("nn::conv2d({}, {}, {}, groups={}, bias={})", a, b, k, o.groups, bias),
            [&] { return nn::conv2d(a, b, k, o)->weight(); },
            ok ? Expect::result({b, a / o.groups, k, k}) : bad ? Expect::must_throw() : Expect::anything());
      break;
    }
    case 2: {
      const bool ok = a >= 0 && fits_cap({a}, DType::f32);
      f.run(fmt::format("nn::batch_norm2d({})", a), [&] { return nn::batch_norm2d(a)->running_mean(); },
            ok ? Expect::result({a}) : a < 0 || !fits_cap({a}, DType::f32) ? Expect::must_throw() : Expect::anything());
      break;
    }
    default: {
      const double p = f.wild_double();
      f.run(fmt::format("nn::dropout({})", p), [&] { (void)nn::dropout(p); return Tensor(); },
            p >= 0 && p <= 1 ? Expect::anything() : Expect::must_throw());
    }
  }
}

/// Restores the tensor size cap when a test ends, however it ends.
struct CapGuard {
  std::size_t saved = tg::max_tensor_bytes();
  ~CapGuard() { tg::set_max_tensor_bytes(saved); }
};

}  // namespace

TEST_CASE("random shapes, dtypes and options end in a right-shaped result or a tapegrad::Error",
          "[reliability][fuzz]") {
  const std::uint64_t seed = env_u64("TAPEGRAD_FUZZ_SEED", 20240607);
  const std::uint64_t rounds = env_u64("TAPEGRAD_FUZZ_ITERS", 30000);
  // A small cap makes "too big" cheap to reach: huge shapes must be refused, never allocated.
  CapGuard cap;
  tg::set_max_tensor_bytes(std::size_t(16) << 20);
  tg::manual_seed(seed);
  Fuzzer f(seed);
  using Family = void (*)(Fuzzer&);
  const Family families[] = {fuzz_factories, fuzz_elementwise, fuzz_unary, fuzz_linalg,
                             fuzz_reductions, fuzz_shapes, fuzz_softmax_losses, fuzz_dropout,
                             fuzz_conv2d, fuzz_conv2d, fuzz_pool, fuzz_pool, fuzz_adaptive_pool, fuzz_batch_norm,
                             fuzz_norms, fuzz_tensor_methods, fuzz_layers};
  for (std::uint64_t i = 0; i < rounds; ++i) {
    families[f.uni(0, i64(std::size(families)) - 1)](f);
  }
  const std::string summary = fmt::format(
      "random inputs (seed {}): {} calls tried, {} returned, {} threw tapegrad::Error "
      "({} of them on inputs the contract allows, e.g. above the size cap), {} backward passes, "
      "{} failures", seed, f.tried, f.returned, f.threw, f.refused_valid(), f.backward_runs,
      f.failures.size());
  WARN(summary);
  for (std::size_t i = 0; i < std::min<std::size_t>(f.failures.size(), 40); ++i) {
    UNSCOPED_INFO(f.failures[i]);
  }
  CHECK(f.failures.empty());
}

TEST_CASE("shapes of 2^40 elements and overflowing products are refused with the default cap",
          "[reliability][fuzz]") {
  // Every shape here is far above any machine's memory (or its product overflows int64):
  // the factories must throw before allocating, never meet the OOM killer.
  const std::vector<std::vector<i64>> shapes = {
      {i64(1) << 20, i64(1) << 20},          {i64(1) << 40},
      {i64(1) << 31, i64(1) << 31, i64(1) << 31}, {kMax, 2},
      {kMax},                                {i64(1) << 62, 4},
      {3, kMax / 2, 5},                      {i64(1) << 32, i64(1) << 32, 0, i64(1) << 32},
      {-1, 3},                               {kMin}};
  Fuzzer f(env_u64("TAPEGRAD_FUZZ_SEED", 20240607));
  for (const auto& s : shapes) {
    const auto n = product(s);
    // A zero anywhere makes the tensor empty: a valid result, as in PyTorch.
    const Expect e = n && *n == 0 ? Expect::result(s) : Expect::must_throw();
    const std::string args = sizes_str(s);
    f.run("zeros(" + args + ")", [&] { return tg::zeros(Shape(s)); }, e);
    f.run("empty(" + args + ", f64)", [&] { return tg::empty(Shape(s), DType::f64); }, e);
    f.run("full(" + args + ")", [&] { return tg::full(Shape(s), 2.0); }, e);
    f.run("randn(" + args + ")", [&] { return tg::randn(Shape(s)); }, e);
    f.run("randint(0, 3, " + args + ")", [&] { return tg::randint(0, 3, Shape(s)); }, e);
    f.run("ones(" + args + ", i64)", [&] { return tg::ones(Shape(s), DType::i64); }, e);
    const Tensor x = tg::ones({2, 3});
    // {-1, 3} is a valid reshape of [2, 3]; every other shape here is impossible for it.
    const Expect reshaped = s == std::vector<i64>{-1, 3} ? Expect::result({2, 3}) : Expect::must_throw();
    f.run("reshape(f32[2, 3], " + args + ")", [&] { return tg::reshape(x, Shape(s)); }, reshaped);
  }
  WARN(fmt::format("huge shapes: {} calls tried, {} returned, {} threw", f.tried, f.returned, f.threw));
  for (const auto& msg : f.failures) UNSCOPED_INFO(msg);
  CHECK(f.failures.empty());
}

// Minimal repros of what the random inputs found (each is one call, so that a sanitizer
// report points at it): window and reshape arithmetic overflowing int64 on huge options.
TEST_CASE("conv2d with padding='same' and a huge dilation throws", "[reliability][repro]") {
  tg::Conv2dOptions o;
  o.padding_mode = tg::ConvPadding::same;
  o.dilation = {kMin, 1};
  CHECK_THROWS_AS(tg::conv2d(tg::ones({1, 1, 5, 5}), tg::ones({1, 1, 3, 3}), Tensor(), o), tg::ValueError);
  o.dilation = {i64(1) << 62, 1};
  CHECK_THROWS_AS(tg::conv2d(tg::ones({1, 1, 5, 5}), tg::ones({1, 1, 3, 3}), Tensor(), o), tg::Error);
}

TEST_CASE("conv2d refuses window options above 2^31 - 1 instead of overflowing", "[reliability][repro]") {
  tg::Conv2dOptions o;
  o.stride = {3, kMax};
  o.padding = {0, 3};
  const Tensor x = tg::randn({1, 1, 6, 6}, DType::f64).set_requires_grad(true);
  CHECK_THROWS_AS(tg::conv2d(x, tg::randn({2, 1, 4, 5}, DType::f64), Tensor(), o), tg::ValueError);
  CHECK_THROWS_WITH(tg::conv2d(x, tg::randn({2, 1, 4, 5}, DType::f64), Tensor(), o),
                    Catch::Matchers::Contains("at most 2147483647"));
}

TEST_CASE("conv2d with a dilation of INT64_MAX throws", "[reliability][repro]") {
  tg::Conv2dOptions o;
  o.dilation = {kMax, 4};
  CHECK_THROWS_AS(tg::conv2d(tg::ones({1, 2, 6, 7}), tg::ones({1, 2, 2, 5}), Tensor(), o), tg::Error);
}

TEST_CASE("reshape to sizes whose product overflows int64 throws", "[reliability][repro]") {
  CHECK_THROWS_AS(tg::reshape(tg::ones({3}), {1, kMax, -1, 2}), tg::Error);
  const i64 big = i64(1) << 31;
  CHECK_THROWS_AS(tg::reshape(tg::ones({2, 3}), {big, big, big}), tg::Error);
}
