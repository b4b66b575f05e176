// newton_cg: Newton's method with conjugate gradient on Hessian-vector products (tg::hvp),
// against gradient descent, on an L2-regularised softmax regression over synthetic data:
//
//   f(W, b) = mean_n cross_entropy(x_n·Wᵀ + b, y_n) + (λ/2)·(‖W‖² + ‖b‖²),
//   x_n: [D] features of very different scales, W: [C, D], b: [C], y_n in [0, C).
//
// A Newton step solves H·p = -g for the direction p (g = ∇f, H = ∇²f). H is never formed:
// conjugate gradient needs only products H·v, and tg::hvp computes H·v as the gradient of
// <∇f, v>: ∇f is computed with create_graph, so it is itself a recorded function of (W, b),
// and one more backward through it gives H·v. Each product costs a forward and two backward
// passes, however many parameters there are. CG stops after a few iterations ("truncated Newton"),
// once the residual is small relative to ‖g‖, and a backtracking line search makes every
// step decrease f.
//
// f is strongly convex (λ > 0): H is positive definite, CG's curvatures dᵀH·d are positive,
// and f(w) - f* <= ‖∇f(w)‖²/(2λ). So running Newton-CG until ‖∇f‖ <= 1e-10 gives f* to far
// better than the tolerance below. Then gradient descent (with the same line search) and
// Newton-CG start from zero, and each counts its steps until f <= f* + 1e-6. Exits 1 unless
// Newton-CG needs fewer steps.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

namespace tg = tapegrad;

namespace {

using Params = std::vector<tg::Tensor>;  // {W, b}

constexpr std::int64_t kSamples = 500, kFeatures = 10, kClasses = 4;
constexpr double kLambda = 1e-3;
constexpr double kLossTolerance = 1e-6;
constexpr std::int64_t kCgIterations = 10;  // per Newton step
constexpr std::int64_t kBudget = 5000;      // steps of either method

// ---- a few vector operations on parameter lists (nothing here requires grad) -------------

double dot(const Params& a, const Params& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += tg::sum(a[i] * b[i]).item<double>();
  return s;
}
/// y + alpha·x
Params axpy(double alpha, const Params& x, const Params& y) {
  Params out;
  for (std::size_t i = 0; i < x.size(); ++i) out.push_back(y[i] + alpha * x[i]);
  return out;
}
Params negated(const Params& x) {
  Params out;
  for (const tg::Tensor& t : x) out.push_back(-t);
  return out;
}

// ---- the problem ---------------------------------------------------------------------------

struct Problem {
  tg::Tensor x;  // [N, D] f64
  tg::Tensor y;  // [N] i64

  /// Feature d has scale 0.3·10^(d/(D-1)) (0.3 to 3): the Hessian's eigenvalues spread over
  /// about two orders of magnitude, the case where gradient descent crawls and Newton does not.
  /// Labels: argmax of a random linear model's logits plus unit Gaussian noise.
  static Problem make() {
    tg::manual_seed(0);
    std::vector<double> scales;
    for (std::int64_t d = 0; d < kFeatures; ++d) {
      scales.push_back(0.3 * std::pow(10.0, static_cast<double>(d) / (kFeatures - 1)));
    }
    const tg::Tensor x = tg::randn({kSamples, kFeatures}, tg::DType::f64) *
                         tg::from_vector(scales, {kFeatures}, tg::DType::f64);
    const tg::Tensor w_true = tg::randn({kClasses, kFeatures}, tg::DType::f64);
    const tg::Tensor noise = tg::randn({kSamples, kClasses}, tg::DType::f64);
    const tg::Tensor logits = tg::linear(x, w_true) + noise;
    return {x, tg::max(logits, 1).indices};
  }
  tg::Tensor loss(const Params& p) const {
    return tg::cross_entropy(tg::linear(x, p[0], p[1]), y) +
           (kLambda / 2) * (tg::sum(p[0] * p[0]) + tg::sum(p[1] * p[1]));
  }
  double value(const Params& p) const {
    tg::NoGradGuard no_grad;
    return loss(p).item<double>();
  }
};

// ---- the two methods -------------------------------------------------------------------------

enum class Method { gradient_descent, newton_cg };

struct Run {
  std::vector<double> losses;  // f at the start of every step, then at the end
  double gradient_norm = 0;
  std::int64_t steps = 0;
  std::int64_t hvps = 0;         // Hessian-vector products
  std::int64_t evaluations = 0;  // loss evaluations in the line search
  double seconds = 0;
  double loss() const { return losses.back(); }
};

/// Truncated CG on H·z = -g from z = 0 (Nocedal & Wright, Algorithm 7.1), stopping when
/// ‖H·z + g‖ <= min(0.5, √‖g‖)·‖g‖ (superlinear convergence near the optimum) or after
/// `iterations`. Every CG iterate is a descent direction when H is positive definite.
Params newton_direction(const tg::TensorFunction& f, const Params& p, const Params& g,
                        std::int64_t iterations, Run& run) {
  const double g_norm = std::sqrt(dot(g, g));
  const double tolerance = std::min(0.5, std::sqrt(g_norm)) * g_norm;
  Params z = {tg::zeros_like(g[0]), tg::zeros_like(g[1])};
  Params r = g;  // the residual H·z + g
  Params d = negated(g);
  double rr = dot(r, r);
  for (std::int64_t j = 0; j < iterations; ++j) {
    // H·d: the gradient of <∇f(p), d> with respect to p.
    const Params hd = tg::hvp(f, p, d).results;
    ++run.hvps;
    const double alpha = rr / dot(d, hd);
    z = axpy(alpha, d, z);
    r = axpy(alpha, hd, r);
    const double rr_next = dot(r, r);
    if (std::sqrt(rr_next) <= tolerance) break;
    d = axpy(rr_next / rr, d, negated(r));
    rr = rr_next;
  }
  return z;
}

/// Runs `method` from p until f <= target_loss or ‖∇f‖ <= gradient_tolerance or kBudget
/// steps. Line search: the largest t in {t0, t0/2, ...} with f(p + t·d) <= f(p) + 1e-4·t·<g, d>
/// (Armijo); t0 = 1 for Newton (its natural step), twice the last accepted t for descent.
Run minimize(const Problem& problem, Method method, Params p, double target_loss,
             double gradient_tolerance, std::int64_t cg_iterations = kCgIterations) {
  const auto start = std::chrono::steady_clock::now();
  const tg::TensorFunction f = [&](const Params& q) { return problem.loss(q); };
  Run run;
  double step = 1;
  for (;; ++run.steps) {
    const tg::FunctionalResult value_and_grad = tg::vjp(f, p);  // f(p) and ∇f(p)
    const Params& g = value_and_grad.results;
    run.losses.push_back(value_and_grad.output.item<double>());
    run.gradient_norm = std::sqrt(dot(g, g));
    if (run.loss() <= target_loss || run.gradient_norm <= gradient_tolerance ||
        run.steps == kBudget) {
      break;
    }
    const Params d = method == Method::newton_cg ? newton_direction(f, p, g, cg_iterations, run)
                                                 : negated(g);
    const double slope = dot(g, d);
    step = method == Method::newton_cg ? 1.0 : 2 * step;
    for (;; step /= 2) {
      ++run.evaluations;
      if (problem.value(axpy(step, d, p)) <= run.loss() + 1e-4 * step * slope) break;
    }
    p = axpy(step, d, p);
  }
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return run;
}

}  // namespace

int main() try {
  const Problem problem = Problem::make();
  const Params start = {tg::zeros({kClasses, kFeatures}, tg::DType::f64),
                        tg::zeros({kClasses}, tg::DType::f64)};

  // The reference optimum: Newton-CG with CG run to convergence (as many iterations as
  // parameters), until the gradient vanishes.
  const double no_target = -std::numeric_limits<double>::infinity();
  const Run optimum = minimize(problem, Method::newton_cg, start, no_target, 1e-10,
                               kClasses * (kFeatures + 1));
  fmt::print("optimum: f* = {:.10f}, |grad f| = {:.1e} after {} Newton steps\n", optimum.loss(),
             optimum.gradient_norm, optimum.steps);
  const double target = optimum.loss() + kLossTolerance;
  fmt::print("target: f <= f* + {:.0e}, from W = 0, b = 0\n", kLossTolerance);

  const Run descent = minimize(problem, Method::gradient_descent, start, target, 0.0);
  const Run newton = minimize(problem, Method::newton_cg, start, target, 0.0);
  auto reached = [&](const Run& r) { return r.loss() <= target; };
  auto report = [&](const char* name, const Run& r, const std::string& products) {
    fmt::print("{:<17} {:>4} steps{} to f - f* = {:.1e} ({}{} loss evaluations in line searches), "
               "{:.0f} ms\n",
               name, r.steps, reached(r) ? "" : " (target NOT reached)", r.loss() - optimum.loss(),
               products, r.evaluations, 1e3 * r.seconds);
  };
  report("gradient descent:", descent, "");
  report("Newton-CG:", newton, fmt::format("{} Hessian-vector products, ", newton.hvps));
  // Newton-CG converges superlinearly (each step gains more digits than the one before, once
  // near the optimum); descent gains a constant factor per step.
  fmt::print("f - f* per step, Newton-CG:");
  for (const double f : newton.losses) fmt::print(" {:.1e}", f - optimum.loss());
  const std::size_t stride = descent.losses.size() / 8 + 1;
  fmt::print("\nf - f* every {} steps, descent:", stride);
  for (std::size_t k = 0; k < descent.losses.size(); k += stride) {
    fmt::print(" {:.1e}", descent.losses[k] - optimum.loss());
  }
  fmt::print("\n");

  const bool ok = optimum.gradient_norm <= 1e-10 && reached(newton) &&
                  (!reached(descent) || newton.steps < descent.steps);
  fmt::print("newton_cg: {}\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
} catch (const tg::Error& e) {
  fmt::print(stderr, "newton_cg: {}\n", e.what());
  return 1;
}
