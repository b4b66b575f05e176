// gradcheck: an op's VJP against central finite differences, in f64.
//
// The analytic side is one reverse pass per upstream gradient c (a "probe"); the numeric
// side perturbs one input element at a time and projects fn's output change on every
// probe at once, so extra probes cost backwards, not forwards. Random probes are
// magnitudes in [0.5, 1.5) with random signs: no entry near 0 that would hide a wrong
// gradient, no two alike (all ones would hide a transposed index).
//
// Kinks: at a point where fn is not smooth the central difference averages two slopes.
// When the one-sided differences disagree, some op in fn's graph declares a kink and the
// analytic value lies between the two slopes (a valid one-sided derivative or subgradient),
// the step crossed a kink: it is counted as such, not as a failure.
#include <algorithm>
#include <cmath>
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

std::vector<std::string> kinked_ops(const Tensor& out) {
  std::vector<std::string> names;
  if (!out.defined() || !out.impl()->grad_fn) return names;
  TapeGraph tg = build_graph({out.impl()->grad_fn.get()});
  for (Node* n : tg.nodes) {
    const std::string_view k = n->op->kinks();
    if (k.empty()) continue;
    std::string entry = fmt::format("{} ({})", n->op->name(), k);
    if (std::find(names.begin(), names.end(), entry) == names.end()) names.push_back(entry);
  }
  return names;
}

Tensor f64_copy(const Tensor& t) {
  if (!t.defined() || !is_floating(t.dtype())) return t;
  return from_vector(t.to_vector<double>(), t.shape(), DType::f64);
}

}  // namespace detail

namespace {

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double acc = 0;
  for (std::size_t i = 0; i < a.size(); ++i) acc += a[i] * b[i];
  return acc;
}

/// The state shared by the numeric evaluations of one gradcheck.
struct Checker {
  const TensorFunction& fn;
  const GradcheckOptions& opt;
  std::vector<Tensor> work;  ///< f64 copies fn is evaluated on; perturbed in place
  bool kinks_declared = false;
  /// Upstream gradients; in full mode, empty: probe k is the one-hot vector e_k.
  std::vector<std::vector<double>> probes;
  bool full = false;

  std::vector<double> eval() {
    NoGradGuard no_grad;
    return fn(work).to_vector<double>();
  }
  double project(const std::vector<double>& f, std::size_t k) const {
    return full ? f[k] : dot(f, probes[k]);
  }
  std::size_t num_probes(std::size_t out_numel) const { return full ? out_numel : probes.size(); }

  /// Records one compared value; returns false when it fails.
  void compare(GradcheckInput& r, double analytic, double numeric, double forward,
               double backward, const std::vector<std::int64_t>& index, std::int64_t probe,
               double& worst_ratio) const {
    ++r.compared;
    const double err = std::abs(analytic - numeric);
    const double allowed = opt.atol + opt.rtol * std::abs(numeric);
    const double scale = std::max({std::abs(analytic), std::abs(numeric), opt.atol});
    const bool nan = std::isnan(analytic) || std::isnan(numeric);
    const double rel = nan ? std::numeric_limits<double>::infinity() : err / scale;
    bool ok = !nan && err <= allowed;
    if (!ok && !nan && kinks_declared) {
      const double disagreement = std::abs(forward - backward);
      const double lo = std::min(forward, backward) - allowed;
      const double hi = std::max(forward, backward) + allowed;
      if (disagreement > 10 * allowed && analytic >= lo && analytic <= hi) {
        if (r.kinks++ == 0) {
          r.kink_index = index;
          r.kink_forward = forward;
          r.kink_backward = backward;
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

  /// Element by element for input `pos`: analytic[k] is the VJP for probe k.
  void elementwise(std::size_t pos, GradcheckInput& r,
                   const std::vector<std::vector<double>>& analytic,
                   const std::vector<double>& f0, const std::vector<std::size_t>& which) {
    Tensor& x = work[pos];
    double* p = x.data<double>();
    const auto out_n = f0.size();
    std::vector<double> p0(num_probes(out_n));
    for (std::size_t k : which) p0[k] = project(f0, k);
    double worst_ratio = -1;
    for (std::int64_t e = 0; e < x.numel(); ++e) {
      const double v = p[e];
      const double up = v + opt.eps;
      const double down = v - opt.eps;
      p[e] = up;
      const auto fu = eval();
      p[e] = down;
      const auto fd = eval();
      p[e] = v;
      const auto index = detail::multi_index(x.shape(), e);
      for (std::size_t k : which) {
        const double pu = project(fu, k), pd = project(fd, k);
        const double numeric = (pu - pd) / (up - down);
        compare(r, analytic[k][static_cast<std::size_t>(e)], numeric, (pu - p0[k]) / (up - v),
                (p0[k] - pd) / (v - down), index, static_cast<std::int64_t>(k), worst_ratio);
      }
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
  Checker ck{fn, options, {}, false, {}, options.mode == GradcheckMode::full};
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    GradcheckInput r;
    r.index = i;
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
    const auto kinked = detail::kinked_ops(out);
    report.kinked_ops = kinked;
    ck.kinks_declared = !kinked.empty();
    const std::int64_t m = out.numel();
    const std::vector<double> f0 = ck.eval();

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
    std::size_t num_probes = 0;
    if (ck.full) {
      num_probes = static_cast<std::size_t>(m);
    } else {
      for (int k = 0; k < options.probes; ++k) {
        ck.probes.push_back(detail::random_cotangent(m, options.seed * 1000003ULL + static_cast<std::uint64_t>(k)));
      }
      num_probes = ck.probes.size();
    }
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
      const std::size_t pos = checked[c];
      GradcheckInput& r = report.inputs[pos];
      if (options.mode != GradcheckMode::fast) {
        ck.elementwise(pos, r, analytic[c], f0, all);
        continue;
      }
      // Fast: one random direction per probe; localise element-wise only on failure.
      Tensor& x = ck.work[pos];
      std::mt19937_64 engine(options.seed * 7919ULL + pos);
      std::normal_distribution<double> normal;
      const std::vector<double> x0 = x.to_vector<double>();
      double* p = x.data<double>();
      double worst_ratio = -1;
      std::vector<std::size_t> failed_probes;
      for (std::size_t k = 0; k < num_probes; ++k) {
        std::vector<double> t(x0.size());
        double norm = 0;
        for (auto& v : t) {
          v = normal(engine);
          norm += v * v;
        }
        norm = std::sqrt(norm);
        for (auto& v : t) v /= norm;
        auto shifted = [&](double h) {
          for (std::size_t e = 0; e < t.size(); ++e) p[e] = x0[e] + h * t[e];
          auto f = ck.eval();
          for (std::size_t e = 0; e < t.size(); ++e) p[e] = x0[e];
          return ck.project(f, k);
        };
        const double pu = shifted(options.eps), pd = shifted(-options.eps);
        const double p0 = ck.project(f0, k);
        const double numeric = (pu - pd) / (2 * options.eps);
        const double analytic_dot = dot(t, analytic[c][k]);
        const auto failing_before = r.failing;
        ck.compare(r, analytic_dot, numeric, (pu - p0) / options.eps, (p0 - pd) / options.eps,
                   {}, static_cast<std::int64_t>(k), worst_ratio);
        if (r.failing > failing_before) failed_probes.push_back(k);
      }
      if (!failed_probes.empty()) {
        GradcheckInput local = r;
        local.compared = local.failing = local.kinks = 0;
        local.worst_index.clear();
        ck.elementwise(pos, local, analytic[c], f0, failed_probes);
        r.worst_index = local.worst_index;
        r.worst_probe = local.worst_probe;
        r.analytic = local.analytic;
        r.numeric = local.numeric;
        r.max_abs_error = std::max(r.max_abs_error, local.max_abs_error);
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
    if (r.kinks > 0) {
      s += fmt::format("\n    kink at {}: one-sided differences {:.6g} and {:.6g} disagree "
                       "({} step{} crossed a kink of {})",
                       r.kink_index.empty() ? std::string("a random direction")
                                            : index_text(r.kink_index),
                       r.kink_forward, r.kink_backward, r.kinks, r.kinks == 1 ? "" : "s",
                       fmt::join(kinked_ops, ", "));
    }
  }
  return s;
}

}  // namespace tapegrad
