// gradcheck: an op's VJP against finite differences, in f64.
//
// The analytic side is one reverse pass per upstream gradient c (a "probe"); the numeric
// side moves the inputs along one direction at a time (one element, or a random direction
// in fast mode), differentiates every output of fn, then projects that slope on every
// probe at once, so extra probes cost backwards, not forwards. Random probes are
// magnitudes in [0.5, 1.5) with random signs: no entry near 0 that would hide a wrong
// gradient, no two alike (all ones would hide a transposed index).
//
// Rounding: each output's difference f(x+h) - f(x-h) is taken before the projection (it
// is exact when the two values are close), so the n-term sum adds only its own rounding;
// the bound gradcheck.hpp states becomes part of the tolerance.
//
// Kinks: every evaluation logs which branch each kinked op took (OpDefinition::branches).
// A step whose evaluation took another branch than the one at x crossed a kink: it is
// retried smaller, then one-sided on a side that crosses nothing. Only a value that no
// step can reach without crossing may be excused as a kink.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>

#include <fmt/format.h>

#include "autograd/graph.hpp"
#include "autograd/gradcheck_detail.hpp"
#include "autograd/tensor_impl.hpp"
#include "tapegrad/autograd.hpp"
#include "tapegrad/gradcheck.hpp"

namespace tapegrad {
namespace detail {

std::vector<std::int64_t> multi_index(const Shape& shape, std::int64_t flat) {
  std::vector<std::int64_t> idx(shape.size());
  for (std::size_t d = shape.size(); d-- > 0;) {
    idx[d] = shape[d] > 0 ? flat % shape[d] : 0;
    flat = shape[d] > 0 ? flat / shape[d] : 0;
  }
  return idx;
}

std::vector<double> random_cotangent(std::int64_t n, std::uint64_t seed) {
  std::mt19937_64 engine(seed ^ 0x9e3779b97f4a7c15ULL);
  std::uniform_real_distribution<double> magnitude(0.5, 1.5);
  std::bernoulli_distribution negative(0.5);
  std::vector<double> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = negative(engine) ? -magnitude(engine) : magnitude(engine);
  return v;
}

std::vector<std::string> kinked_ops(const Tensor& out, bool without_branches_only) {
  std::vector<std::string> names;
  if (!out.defined() || !out.impl()->grad_fn) return names;
  TapeGraph tg = build_graph({out.impl()->grad_fn.get()});
  for (Node* n : tg.nodes) {
    const std::string_view k = n->op->kinks();
    if (k.empty() || (without_branches_only && n->op->has_branches())) continue;
    std::string entry = fmt::format("{} ({})", n->op->name(), k);
    if (std::find(names.begin(), names.end(), entry) == names.end()) names.push_back(entry);
  }
  return names;
}

Tensor f64_copy(const Tensor& t) {
  if (!t.defined() || !is_floating(t.dtype())) return t;
  return from_vector(t.to_vector<double>(), t.shape(), DType::f64);
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  if (a.meta() != b.meta()) return false;
  const auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  return va.empty() || std::memcmp(va.data(), vb.data(), va.size() * sizeof(double)) == 0;  // (empty: null data)
}

}  // namespace detail

namespace {

/// The relative error allowed on each value fn returns: two roundings (gradcheck.hpp).
constexpr double kValueRounding = std::numeric_limits<double>::epsilon();
/// Steps tried: eps, eps/10, eps/100.
constexpr int kStepLevels = 3;

/// One evaluation of fn: its outputs and the branches its kinked ops took.
struct Evaluation {
  std::vector<double> f;
  std::vector<detail::BranchRecord> branches;
};

/// "relu (x = 0)" for the first op whose branches differ between two evaluations; empty
/// when none does.
std::string crossed(const Evaluation& at, const Evaluation& step) {
  if (at.branches.size() != step.branches.size()) return "an op (fn recorded other ops)";
  for (std::size_t i = 0; i < at.branches.size(); ++i) {
    const detail::BranchRecord& b = at.branches[i];
    if (b.op != step.branches[i].op || !detail::bitwise_equal(b.which, step.branches[i].which)) {
      return fmt::format("{} ({})", b.op, b.kinks);
    }
  }
  return {};
}

/// fn's outputs differentiated along one direction of its inputs by finite differences.
struct Slope {
  std::vector<double> value;  ///< per output
  std::vector<double> noise;  ///< per output: what rounding can do to value (gradcheck.hpp)
  std::vector<double> forward, backward;  ///< one-sided first-order slopes at the first step
  std::string crossed;  ///< set when no step avoided a kink: the op whose kink it is
  std::string retried;  ///< set when the first step crossed this op's kink and another did not
};

/// A slope projected on one probe.
struct Projection {
  double value, noise, forward, backward;
};

/// The state shared by the numeric evaluations of one gradcheck.
struct Checker {
  const TensorFunction& fn;
  const GradcheckOptions& opt;
  std::vector<Tensor> work;  ///< f64 copies fn is evaluated on; moved in place
  /// Upstream gradients; in full mode, empty: probe k is the one-hot vector e_k.
  std::vector<std::vector<double>> probes;
  bool full = false;
  Evaluation at_x;  ///< fn at the unmoved inputs
  /// Kinked ops of fn that cannot say which branch they took: a step is judged from its
  /// one-sided differences alone there.
  std::string unwatched_kinks;

  Evaluation eval() {
    NoGradGuard no_grad;
    Evaluation e;
    struct Listen {
      std::vector<detail::BranchRecord>* previous;
      ~Listen() { detail::set_branch_log(previous); }
    } listen{detail::set_branch_log(&e.branches)};
    e.f = fn(work).to_vector<double>();
    return e;
  }
  std::size_t num_probes(std::size_t out_numel) const { return full ? out_numel : probes.size(); }

  /// `move(h)` puts the inputs at x + h·direction and returns the step it took; move(0)
  /// restores x.
  Slope slope(const std::function<double(double)>& move) {
    const std::vector<double>& f0 = at_x.f;
    const std::size_t n = f0.size();
    Slope s;
    auto one_sided = [&](const std::vector<double>& f, double step) {
      std::vector<double> v(n);
      for (std::size_t i = 0; i < n; ++i) v[i] = (f[i] - f0[i]) / step;
      return v;
    };
    auto central = [&](const std::vector<double>& fu, const std::vector<double>& fd, double width) {
      s.value.resize(n);
      s.noise.resize(n);
      for (std::size_t i = 0; i < n; ++i) {
        s.value[i] = (fu[i] - fd[i]) / width;
        s.noise[i] = fu[i] == fd[i] ? 0 : kValueRounding * (std::abs(fu[i]) + std::abs(fd[i])) / width;
      }
    };
    // (-3 f(x) + 4 f(x+a) - f(x+2a)) / 2a: second order, on one side of x only.
    auto second_order = [&](const std::vector<double>& near, const std::vector<double>& far, double a) {
      s.value.resize(n);
      s.noise.resize(n);
      for (std::size_t i = 0; i < n; ++i) {
        s.value[i] = (4 * near[i] - 3 * f0[i] - far[i]) / (2 * a);
        const bool moved = near[i] != f0[i] || far[i] != f0[i];
        s.noise[i] = moved ? kValueRounding * (3 * std::abs(f0[i]) + 4 * std::abs(near[i]) + std::abs(far[i])) / (2 * std::abs(a))
                           : 0;
      }
    };
    std::string first_crossed;
    double h = opt.eps;
    for (int level = 0; level < kStepLevels; ++level, h /= 10) {
      const double hu = move(h);
      const Evaluation up = eval();
      const double hd = move(-h);
      const Evaluation down = eval();
      move(0);
      const std::string cu = crossed(at_x, up), cd = crossed(at_x, down);
      if (level == 0) {
        s.forward = one_sided(up.f, hu);
        s.backward = one_sided(down.f, hd);
      }
      // Central when neither side crossed; at the first step, also the fallback when no
      // step avoids the kink.
      if (level == 0 || (cu.empty() && cd.empty())) central(up.f, down.f, hu - hd);
      if (cu.empty() && cd.empty()) {
        s.retried = first_crossed;
        return s;
      }
      if (level == 0) first_crossed = cu.empty() ? cd : cu;
      // One-sided on a side that crossed nothing, if its second point crosses nothing either.
      auto one_side = [&](const Evaluation& near, double near_step, double sign) {
        move(2 * sign * h);
        const Evaluation far = eval();
        move(0);
        if (!crossed(at_x, far).empty()) return false;
        second_order(near.f, far.f, near_step);
        return true;
      };
      if ((cu.empty() && one_side(up, hu, 1)) || (cd.empty() && one_side(down, hd, -1))) {
        s.retried = first_crossed;
        return s;
      }
    }
    s.crossed = first_crossed;
    return s;
  }

  Projection project(const Slope& s, std::size_t k) const {
    if (full) return {s.value[k], s.noise[k], s.forward[k], s.backward[k]};
    const std::vector<double>& c = probes[k];
    Projection p{0, 0, 0, 0};
    double magnitude = 0;
    for (std::size_t i = 0; i < c.size(); ++i) {
      p.value += c[i] * s.value[i];
      p.noise += std::abs(c[i]) * s.noise[i];
      magnitude += std::abs(c[i] * s.value[i]);
      p.forward += c[i] * s.forward[i];
      p.backward += c[i] * s.backward[i];
    }
    const double nu = static_cast<double>(c.size()) * std::numeric_limits<double>::epsilon() / 2;
    p.noise += nu / (1 - nu) * magnitude;
    return p;
  }

  /// Records one compared value in r.
  void compare(GradcheckInput& r, double analytic, const Projection& p, const Slope& s,
               const std::vector<std::int64_t>& index, std::int64_t probe,
               double& worst_ratio) const {
    ++r.compared;
    const double numeric = p.value;
    const double err = std::abs(analytic - numeric);
    const double allowed = opt.atol + opt.rtol * std::abs(numeric) + p.noise;
    const double scale = std::max({std::abs(analytic), std::abs(numeric), opt.atol});
    const bool nan = std::isnan(analytic) || std::isnan(numeric);
    const double rel = nan ? std::numeric_limits<double>::infinity() : err / scale;
    const bool ok = !nan && err <= allowed;
    // A kink excuses a difference only where no step avoided it, or where the kinked op
    // cannot say which branch it took.
    const std::string& kink = !s.crossed.empty() ? s.crossed : unwatched_kinks;
    if (!ok && !nan && !kink.empty()) {
      const double disagreement = std::abs(p.forward - p.backward);
      const double lo = std::min(p.forward, p.backward) - allowed;
      const double hi = std::max(p.forward, p.backward) + allowed;
      if (disagreement > 10 * allowed && analytic >= lo && analytic <= hi) {
        if (r.kinks++ == 0) {
          r.kink_index = index;
          r.kink_forward = p.forward;
          r.kink_backward = p.backward;
          r.kink_op = kink;
        }
        return;
      }
    }
    if (!nan) {
      r.max_abs_error = std::max(r.max_abs_error, err);
      r.max_rel_error = std::max(r.max_rel_error, rel);
    } else {
      r.max_abs_error = r.max_rel_error = std::numeric_limits<double>::infinity();
    }
    if (!ok) ++r.failing;
    const double ratio = nan ? std::numeric_limits<double>::infinity() : err / allowed;
    if (ratio > worst_ratio || r.worst_index.empty()) {
      worst_ratio = ratio;
      r.worst_index = index;
      r.worst_probe = probe;
      r.analytic = analytic;
      r.numeric = numeric;
    }
  }

  /// Compares every probe in `which` on one slope; analytic(k) is the VJP's value there.
  void compare_slope(GradcheckInput& r, const Slope& s,
                     const std::function<double(std::size_t)>& analytic,
                     const std::vector<std::size_t>& which,
                     const std::vector<std::int64_t>& index, double& worst_ratio) const {
    if (!s.retried.empty() && r.retried++ == 0) r.retried_op = s.retried;
    for (std::size_t k : which) {
      compare(r, analytic(k), project(s, k), s, index, static_cast<std::int64_t>(k), worst_ratio);
    }
  }

  /// Element e of input `pos` on the probes in `which`; analytic[k] is the VJP for probe k.
  void compare_element(std::size_t pos, std::int64_t e, GradcheckInput& r,
                       const std::vector<std::vector<double>>& analytic,
                       const std::vector<std::size_t>& which, double& worst_ratio) {
    Tensor& x = work[pos];
    double* p = x.data<double>();
    const double v = p[e];
    const Slope s = slope([&](double h) {
      p[e] = v + h;
      return p[e] - v;
    });
    const auto i = static_cast<std::size_t>(e);
    compare_slope(r, s, [&](std::size_t k) { return analytic[k][i]; }, which,
                  detail::multi_index(x.shape(), e), worst_ratio);
  }

  void elementwise(std::size_t pos, GradcheckInput& r,
                   const std::vector<std::vector<double>>& analytic,
                   const std::vector<std::size_t>& which, double& worst_ratio) {
    for (std::int64_t e = 0; e < work[pos].numel(); ++e) {
      compare_element(pos, e, r, analytic, which, worst_ratio);
    }
  }

  /// <J·t, c_k> by finite differences against <t, Jᵀc_k> for the part of the unit
  /// direction t on elements [lo, hi) of input `pos`, scaled back to unit length. Compared
  /// into r when it passes; returns false (r untouched) when it fails.
  bool compare_direction(std::size_t pos, const std::vector<double>& t, std::size_t lo,
                         std::size_t hi, GradcheckInput& r, const std::vector<double>& analytic_k,
                         std::size_t k, double& worst_ratio) {
    std::vector<double> dir(t.begin() + static_cast<std::ptrdiff_t>(lo),
                            t.begin() + static_cast<std::ptrdiff_t>(hi));
    double norm = 0;
    for (double v : dir) norm += v * v;
    norm = std::sqrt(norm);
    double* p = work[pos].data<double>() + lo;
    const std::vector<double> x0(p, p + dir.size());
    double analytic = 0;
    for (std::size_t e = 0; e < dir.size(); ++e) {
      dir[e] /= norm;
      analytic += dir[e] * analytic_k[lo + e];
    }
    const Slope s = slope([&](double h) {
      for (std::size_t e = 0; e < dir.size(); ++e) p[e] = x0[e] + h * dir[e];
      return h;
    });
    GradcheckInput trial = r;
    double trial_worst = worst_ratio;
    compare_slope(trial, s, [&](std::size_t) { return analytic; }, {k}, {}, trial_worst);
    if (trial.failing > r.failing) return false;
    r = std::move(trial);
    worst_ratio = trial_worst;
    return true;
  }

  /// The projection of t on elements [lo, hi) failed: bisect. Each half is compared as a
  /// direction of its own (a half that passes is trusted like any projection), single
  /// elements element-wise. Returns true at the first element confirmed wrong.
  bool bisect(std::size_t pos, const std::vector<double>& t, std::size_t lo, std::size_t hi,
              GradcheckInput& r, const std::vector<std::vector<double>>& analytic, std::size_t k,
              double& worst_ratio) {
    if (hi - lo == 1) {
      const auto failing_before = r.failing;
      compare_element(pos, static_cast<std::int64_t>(lo), r, analytic, {k}, worst_ratio);
      return r.failing > failing_before;
    }
    const std::size_t mid = lo + (hi - lo) / 2;
    for (const auto& [a, b] : {std::pair{lo, mid}, std::pair{mid, hi}}) {
      const bool trusted = b - a > 1 && compare_direction(pos, t, a, b, r, analytic[k], k, worst_ratio);
      if (!trusted && bisect(pos, t, a, b, r, analytic, k, worst_ratio)) return true;
    }
    return false;
  }

  /// Fast mode for input `pos`: one random unit direction t per probe; <J·t, c> against
  /// <t, Jᵀc>. A failing probe only says where to look: its direction is bisected down to
  /// elements compared element-wise, and those decide.
  void fast(std::size_t pos, GradcheckInput& r, const std::vector<std::vector<double>>& analytic) {
    std::mt19937_64 engine(opt.seed * 7919ULL + pos);
    std::normal_distribution<double> normal;
    const auto n = static_cast<std::size_t>(work[pos].numel());
    double worst = -1;
    for (std::size_t k = 0; k < probes.size(); ++k) {
      std::vector<double> t(n);
      for (auto& v : t) v = normal(engine);
      if (n == 0 || compare_direction(pos, t, 0, n, r, analytic[k], k, worst)) continue;
      ++r.rechecked_probes;
      bisect(pos, t, 0, n, r, analytic, k, worst);
    }
  }
};

std::vector<double> values_or_zeros(const Tensor& g, std::int64_t n) {
  return g.defined() ? g.to_vector<double>() : std::vector<double>(static_cast<std::size_t>(n), 0.0);
}

std::string mode_name(GradcheckMode m) {
  switch (m) {
    case GradcheckMode::elementwise: return "elementwise";
    case GradcheckMode::full: return "full Jacobian";
    case GradcheckMode::fast: return "fast";
  }
  return "?";
}

std::string index_text(const std::vector<std::int64_t>& idx) {
  return fmt::format("[{}]", fmt::join(idx, ", "));
}

}  // namespace

GradcheckReport gradcheck(const TensorFunction& fn, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& options) {
  GradcheckReport report;
  report.mode = options.mode;
  report.options = options;
  if (!(options.eps > 0) || options.probes < 1) {
    report.error = fmt::format("gradcheck: eps must be > 0 and probes >= 1 (got eps {}, probes {})",
                               options.eps, options.probes);
    return report;
  }
  std::vector<Tensor> leaves;   // f64 copies requiring grad where the inputs do
  std::vector<std::size_t> checked;
  Checker ck{fn, options, {}, {}, options.mode == GradcheckMode::full, {}, {}};
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    GradcheckInput r;
    r.index = i;
    r.defined = t.defined();
    if (t.defined()) r.meta = t.meta();
    r.checked = t.defined() && t.requires_grad();
    report.inputs.push_back(r);
    Tensor leaf = detail::f64_copy(t);
    ck.work.push_back(detail::f64_copy(t));
    if (r.checked) {
      leaf.set_requires_grad(true);
      checked.push_back(i);
    }
    leaves.push_back(leaf);
  }
  if (checked.empty()) {
    report.error = "gradcheck: no input requires grad, so there is nothing to check";
    return report;
  }

  try {
    const Tensor out = fn(leaves);
    if (!out.defined() || !is_floating(out.dtype())) {
      report.error = "gradcheck: fn must return a defined floating tensor";
      return report;
    }
    report.kinked_ops = detail::kinked_ops(out);
    ck.unwatched_kinks = fmt::format("{}", fmt::join(detail::kinked_ops(out, true), ", "));
    const std::int64_t m = out.numel();
    ck.at_x = ck.eval();

    std::vector<Tensor> wrt;
    for (std::size_t i : checked) wrt.push_back(leaves[i]);
    // analytic[c][k]: the VJP of checked input c for probe k.
    auto vjp = [&](const std::vector<double>& cot) {
      std::vector<std::vector<double>> g;
      if (!out.requires_grad()) {
        for (const Tensor& t : wrt) g.push_back(values_or_zeros(Tensor(), t.numel()));
        return g;
      }
      const Tensor seed = from_vector(cot, out.shape(), out.dtype());
      const auto grads = grad({out}, wrt, {seed}, true);
      for (std::size_t c = 0; c < wrt.size(); ++c) {
        g.push_back(values_or_zeros(grads[c], wrt[c].numel()));
      }
      return g;
    };
    if (!ck.full) {
      for (int k = 0; k < options.probes; ++k) {
        ck.probes.push_back(detail::random_cotangent(m, options.seed * 1000003ULL + static_cast<std::uint64_t>(k)));
      }
    }
    const std::size_t num_probes = ck.num_probes(static_cast<std::size_t>(m));
    std::vector<std::vector<std::vector<double>>> analytic(wrt.size(),
        std::vector<std::vector<double>>(num_probes));
    for (std::size_t k = 0; k < num_probes; ++k) {
      std::vector<double> cot;
      if (ck.full) {
        cot.assign(static_cast<std::size_t>(m), 0.0);
        cot[k] = 1.0;
      } else {
        cot = ck.probes[k];
      }
      auto g = vjp(cot);
      for (std::size_t c = 0; c < wrt.size(); ++c) analytic[c][k] = std::move(g[c]);
    }

    std::vector<std::size_t> all(num_probes);
    for (std::size_t k = 0; k < num_probes; ++k) all[k] = k;
    for (std::size_t c = 0; c < checked.size(); ++c) {
      GradcheckInput& r = report.inputs[checked[c]];
      if (options.mode == GradcheckMode::fast) {
        ck.fast(checked[c], r, analytic[c]);
      } else {
        double worst = -1;
        ck.elementwise(checked[c], r, analytic[c], all, worst);
      }
    }
  } catch (const std::exception& e) {
    report.error = fmt::format("gradcheck: fn threw: {}", e.what());
    return report;
  }
  report.passed = std::all_of(report.inputs.begin(), report.inputs.end(),
                              [](const GradcheckInput& r) { return !r.checked || r.passed(); });
  return report;
}

double GradcheckReport::max_rel_error() const {
  double worst = 0;
  for (const auto& r : inputs) worst = std::max(worst, r.max_rel_error);
  return worst;
}

std::string GradcheckReport::to_string() const {
  if (!error.empty()) return fmt::format("gradcheck could not run: {}", error);
  std::string s = fmt::format(
      "gradcheck {} ({}{}, eps {:g}, atol {:g}, rtol {:g}): worst relative error {:.3g}",
      passed ? "passed" : "FAILED", mode_name(mode),
      mode == GradcheckMode::full ? "" : fmt::format(", {} probes", options.probes), options.eps,
      options.atol, options.rtol, max_rel_error());
  for (const auto& r : inputs) {
    if (!r.defined) {
      s += fmt::format("\n  input {}: absent (an undefined tensor)", r.index);
      continue;
    }
    s += fmt::format("\n  input {} {} {}", r.index, r.meta.shape, r.meta.dtype);
    if (!r.checked) {
      s += ": not checked (does not require grad)";
      continue;
    }
    if (r.meta.dtype == DType::f32) s += " (checked through an f64 copy)";
    s += fmt::format(": {} of {} failing, max abs error {:.3g}, max rel error {:.3g}", r.failing,
                     r.compared, r.max_abs_error, r.max_rel_error);
    if (!r.worst_index.empty() || r.worst_probe >= 0) {
      s += fmt::format("; worst at {} ({} {}): analytic {:.10g}, numeric {:.10g}",
                       r.worst_index.empty() ? std::string("a random direction")
                                             : index_text(r.worst_index),
                       mode == GradcheckMode::full ? "output" : "probe", r.worst_probe,
                       r.analytic, r.numeric);
    }
    if (r.rechecked_probes > 0) {
      s += fmt::format("\n    {} of {} projections disagreed; re-checked by halves down to single "
                       "elements, which decide", r.rechecked_probes, options.probes);
    }
    if (r.kinks > 0) {
      s += fmt::format("\n    kink at {}: one-sided differences {:.6g} and {:.6g} disagree "
                       "({} value{} at a kink of {} that no smaller or one-sided step avoided)",
                       r.kink_index.empty() ? std::string("a random direction")
                                            : index_text(r.kink_index),
                       r.kink_forward, r.kink_backward, r.kinks, r.kinks == 1 ? "" : "s",
                       r.kink_op);
    }
    if (r.retried > 0) {
      s += fmt::format("\n    {} step{} crossed a kink of {} and {} compared on a smaller or "
                       "one-sided step", r.retried, r.retried == 1 ? "" : "s", r.retried_op,
                       r.retried == 1 ? "was" : "were");
    }
  }
  return s;
}

}  // namespace tapegrad
