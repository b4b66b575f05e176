#pragma once
/// \file
/// Models in C++: Module (parameters, buffers, submodules), the layers, the losses and the
/// weight initialisers. Built only on the public op API.
///
/// A model reads like its PyTorch twin:
/// \code
///   namespace nn = tapegrad::nn;
///   auto model = nn::sequential({
///       nn::conv2d(1, 6, 5, {.padding = 2}), nn::relu(), nn::max_pool2d(2),  // [N, 6, 14, 14]
///       nn::conv2d(6, 16, 5), nn::relu(), nn::max_pool2d(2),                      // [N, 16, 5, 5]
///       nn::flatten(), nn::linear(16 * 5 * 5, 120), nn::relu(), nn::linear(120, 10)});
///   tapegrad::Tensor logits = (*model)(images);   // images: [N, 1, 28, 28] -> [N, 10]
///   for (auto& [name, p] : model->named_parameters()) ...  // "0.weight", "0.bias", "3.weight", ...
/// \endcode
/// The lower-case factories (`nn::linear(...)`) return `std::shared_ptr` to the layer class of
/// the same name in PascalCase (`nn::Linear`); both can be used.
#include <array>
#include <cstdint>
#include <concepts>
#include <deque>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <typeinfo>
#include <utility>
#include <vector>

#include "tapegrad/error.hpp"
#include "tapegrad/ops.hpp"
#include "tapegrad/tensor.hpp"

namespace tapegrad::nn {


// ---- Module ----------------------------------------------------------------------------------

class Module;
class SwapTensorsGuard;
namespace detail {
/// Throws ValueError naming `what`, the module's type and M's: a container's typed access
/// asked for the wrong layer type.
[[noreturn]] void throw_wrong_module(const Module& module, const std::string& what, const char* wanted);
template <class M>
M& as(Module& module, const std::string& what) {
  if (auto* m = dynamic_cast<M*>(&module)) return *m;
  throw_wrong_module(module, what, typeid(M).name());
}
}  // namespace detail

/// Base of every layer and model. A module owns named parameters (tensors that require grad
/// and that optimizers update), named buffers (state that is saved but not trained, such as
/// BatchNorm2d's running statistics) and named submodules, each registered once in the
/// constructor. Names are unique within a module and contain no '.'; nested names are joined
/// with dots. Modules are held by std::shared_ptr and are not copyable.
///
/// The forward may have any signature. A module of one tensor overrides
/// `Tensor forward(const Tensor&)` and can be called as `(*m)(x)` and chained in Sequential.
/// Any other module just declares its own, with any inputs and outputs, and is called as
/// `m->forward(...)`:
/// \code
///   struct Cell : nn::Module {   // (x, h) -> h
///     Tensor forward(const Tensor& x, const Tensor& h) { ... }
///   };
/// \endcode
class Module : public std::enable_shared_from_this<Module> {
 public:
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  virtual ~Module() = default;

  /// The computation of a module of one tensor. This default throws ValueError: a module
  /// whose forward takes other inputs declares its own forward instead.
  virtual Tensor forward(const Tensor& x);
  Tensor operator()(const Tensor& x) { return forward(x); }

  /// Every parameter of this module and its submodules, depth first in registration order.
  std::vector<Tensor> parameters() const;
  /// The same with dotted names: "weight", "features.0.bias", ...
  NamedTensors named_parameters() const;
  /// Every buffer, with dotted names ("bn.running_mean").
  NamedTensors named_buffers() const;
  /// named_parameters() followed by named_buffers(): everything a checkpoint must hold.
  NamedTensors named_state() const;
  /// The direct submodules with their names.
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children() const;
  /// This module (named "") and every submodule below it, depth first in registration order,
  /// with dotted names ("features", "features.0", ...); a module registered twice is listed
  /// once, as PyTorch's named_modules. With include_self, this module must be held by a
  /// std::shared_ptr (else ValueError).
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_modules(bool include_self = true) const;

  /// Calls fn on every submodule (children before their parents) and then on this module, as
  /// PyTorch's Module.apply. Returns *this.
  Module& apply(const std::function<void(Module&)>& fn);
  /// The same for the modules that are an M only, e.g. an initialisation loop:
  /// `model->apply<nn::Conv2d>([](nn::Conv2d& c) { nn::kaiming_normal_(c.weight()); })`.
  template <class M, class Fn>
  Module& apply(Fn&& fn) {
    return apply([&fn](Module& m) {
      if (auto* typed = dynamic_cast<M*>(&m)) fn(*typed);
    });
  }

  /// Switches this module and every submodule to training (true) or evaluation mode;
  /// Dropout and BatchNorm2d behave differently in the two.
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  /// Clears the accumulated gradient of every parameter (sets it to zero where present).
  void zero_grad();

  /// Converts every floating parameter and buffer (recursively) to `dtype`, in place: each
  /// tensor object is kept and given converted data (Tensor::set_data), so every handle to it
  /// (the reference register_parameter returned, a copy kept as a member, an optimizer built
  /// before) sees the new dtype; requires_grad is kept and an accumulated gradient is
  /// converted, as PyTorch's Module.to. An optimizer converts its state for the parameter at
  /// its next step. i64 buffers stay i64. Returns *this. Throws DTypeError unless `dtype` is
  /// floating.
  Module& to(DType dtype);

 protected:
  /// Registers a parameter: a floating tensor that is made a leaf requiring grad. Returns a
  /// reference to the stored tensor, which stays valid (and is updated by to()) for the
  /// module's lifetime. Throws ValueError on an empty, dotted or already used name.
  Tensor& register_parameter(const std::string& name, Tensor tensor);
  /// Registers a buffer (never requires grad); same rules and return as register_parameter.
  Tensor& register_buffer(const std::string& name, Tensor tensor);
  /// Registers a submodule and returns it.
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_child(name, module);
    return module;
  }

 private:
  void check_new_name(const char* what, const std::string& name) const;
  void add_child(const std::string& name, std::shared_ptr<Module> module);
  void collect(const std::string& prefix, bool params, NamedTensors& out) const;
  friend class SwapTensorsGuard;
  /// The parameter or buffer slot named `dotted` ("layer.0.weight"), or nullptr.
  Tensor* find_tensor(std::string_view dotted);
  // deque: references returned by register_* stay valid as more names are registered.
  std::deque<std::pair<std::string, Tensor>> params_;
  std::deque<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

/// Within its scope, the module's parameters and buffers named in `tensors` are replaced by
/// the given tensors; the destructor puts the module's own back (also during unwinding). For
/// any computation that uses a module with some tensors swapped out (a loss that calls the
/// module twice, a gradient penalty); functional_call is this guard around one forward.
/// Names are named_state()'s ("0.weight", "bn.running_mean"); an unknown or repeated name,
/// or an undefined tensor, is a ValueError and nothing is replaced. The module must read its
/// tensors through the slots register_parameter and register_buffer return (a `Tensor&` or
/// pointer member, as every built-in layer does): a copy taken at construction keeps the
/// original. Not for concurrent use of the module from other threads.
class SwapTensorsGuard {
 public:
  SwapTensorsGuard(Module& module, const NamedTensors& tensors);
  ~SwapTensorsGuard();
  SwapTensorsGuard(const SwapTensorsGuard&) = delete;
  SwapTensorsGuard& operator=(const SwapTensorsGuard&) = delete;

 private:
  std::vector<std::pair<Tensor*, Tensor>> saved_;
};

/// Runs module.forward(inputs...) with the parameters and buffers named in `tensors` replaced
/// by the given tensors, as torch.func.functional_call: the module is left as it was (also
/// when forward throws) and gradients flow to the given tensors, not to the module's own.
/// For gradcheck with respect to one parameter, or a MAML-style inner loop (the replacements
/// may be computed tensors, e.g. w - lr·grad with create_graph). The rules for names and for
/// how the module reads its tensors are SwapTensorsGuard's.
template <class M, class... Inputs>
  requires std::derived_from<M, Module>
auto functional_call(M& module, const NamedTensors& tensors, Inputs&&... inputs) {
  const SwapTensorsGuard swapped(module, tensors);
  return module.forward(std::forward<Inputs>(inputs)...);
}
template <class M, class... Inputs>
  requires std::derived_from<M, Module>
auto functional_call(const std::shared_ptr<M>& module, const NamedTensors& tensors,
                     Inputs&&... inputs) {
  if (!module) throw ValueError("functional_call: the module is null");
  return functional_call(*module, tensors, std::forward<Inputs>(inputs)...);
}

/// Submodules in a list, named "0", "1", ... as torch.nn.ModuleList: their parameters appear in
/// named_parameters() and checkpoints as "0.weight", ... A ModuleList is a container, not a
/// layer: its forward throws; a model iterates it in its own forward.
class ModuleList : public Module {
 public:
  ModuleList() = default;
  ModuleList(std::initializer_list<std::shared_ptr<Module>> modules);
  explicit ModuleList(const std::vector<std::shared_ptr<Module>>& modules);
  /// Appends a module (named by its position) and returns *this.
  ModuleList& push_back(std::shared_ptr<Module> module);
  std::size_t size() const { return modules_.size(); }
  /// Module i; throws ValueError when i >= size().
  Module& operator[](std::size_t i) const;
  /// Module i as an M (`layers.at<nn::Linear>(0).weight()`); throws ValueError when i >=
  /// size() or module i is not an M.
  template <class M>
  M& at(std::size_t i) const {
    return detail::as<M>((*this)[i], fmt::format("module {}", i));
  }
  auto begin() const { return modules_.begin(); }
  auto end() const { return modules_.end(); }
  Tensor forward(const Tensor& x) override;

 protected:
  /// The class name errors give ("ModuleList", "Sequential").
  virtual const char* kind() const { return "ModuleList"; }

 private:
  std::vector<std::shared_ptr<Module>> modules_;
};

/// A module of one tensor: its forward(const Tensor&) is the one Module declares (overridden,
/// or a container's). Modules whose own forward takes other inputs do not satisfy it.
template <class M>
concept OneTensorModule = std::derived_from<M, Module> &&
    requires { static_cast<Tensor (M::*)(const Tensor&)>(&M::forward); };

/// Modules applied one after the other; submodule i is named "i". A ModuleList whose forward
/// chains its modules. Only modules of one tensor can be chained: a module with another
/// forward signature does not compile in the list.
class Sequential : public ModuleList {
 public:
  /// One entry of the chain: any module of one tensor (see OneTensorModule).
  struct Layer {
    template <OneTensorModule M>
    Layer(std::shared_ptr<M> m) : module(std::move(m)) {}  // NOLINT: implicit on purpose
    std::shared_ptr<Module> module;
  };
  Sequential() = default;
  Sequential(std::initializer_list<Layer> layers);
  explicit Sequential(const std::vector<Layer>& layers);
  /// Appends a layer (named by its position) and returns *this.
  Sequential& push_back(Layer layer);
  Tensor forward(const Tensor& x) override;

 protected:
  const char* kind() const override { return "Sequential"; }
};

/// Submodules by name, in insertion order, as torch.nn.ModuleDict: their parameters appear as
/// "<name>.weight", ... A container: its forward throws.
class ModuleDict : public Module {
 public:
  ModuleDict() = default;
  ModuleDict(std::initializer_list<std::pair<std::string, std::shared_ptr<Module>>> modules);
  /// Adds a module under `name` (non-empty, no '.', not yet used; else ValueError).
  ModuleDict& insert(const std::string& name, std::shared_ptr<Module> module);
  std::size_t size() const { return children().size(); }
  bool contains(const std::string& name) const;
  /// The names in insertion order.
  std::vector<std::string> keys() const;
  /// The module named `name`; throws ValueError when there is none.
  Module& operator[](const std::string& name) const;
  /// The module named `name` as an M; throws ValueError when there is none or it is not an M.
  template <class M>
  M& at(const std::string& name) const {
    return detail::as<M>((*this)[name], fmt::format("module '{}'", name));
  }
  Tensor forward(const Tensor& x) override;
};

/// Returns its input: a placeholder layer (a skipped block, a removed head), as torch.nn.Identity.
class Identity : public Module {
 public:
  Tensor forward(const Tensor& x) override { return x; }
};

// ---- layers ----------------------------------------------------------------------------------

/// A pair of sizes: one number (3 -> {3, 3}) or two ({3, 5}: height, width); see
/// tapegrad::Size2. Where an options struct is also accepted (MaxPool2d, AvgPool2d), spell a
/// pair as `nn::Size2{3, 5}`: a bare `{3, 5}` is ambiguous there.
using tapegrad::Size2;

/// y = x·weightᵀ + bias. x: [..., in_features] -> [..., out_features].
/// weight: [out_features, in_features], bias: [out_features]; PyTorch's default init
/// (uniform ±1/sqrt(in_features) for both).
class Linear : public Module {
 public:
  Linear(std::int64_t in_features, std::int64_t out_features, bool bias = true);
  Tensor forward(const Tensor& x) override;
  Tensor& weight() { return *weight_; }
  /// Undefined when constructed without bias.
  Tensor& bias() { return *bias_; }

 private:
  Tensor* weight_;
  Tensor* bias_;
  Tensor no_bias_;
};

/// A lookup table, as torch.nn.Embedding: ids (i64, any shape) -> [*ids.shape, embedding_dim].
/// weight: [num_embeddings, embedding_dim], initialised N(0, 1) as PyTorch, with the row
/// padding_idx (in [-num_embeddings, num_embeddings); negative counts from the end) zeroed;
/// that row never receives a gradient.
class Embedding : public Module {
 public:
  Embedding(std::int64_t num_embeddings, std::int64_t embedding_dim,
            std::optional<std::int64_t> padding_idx = {});
  Tensor forward(const Tensor& ids) override;
  Tensor& weight() { return *weight_; }
  /// Normalised to [0, num_embeddings), or empty.
  std::optional<std::int64_t> padding_idx() const { return padding_idx_; }

 private:
  Tensor* weight_;
  std::optional<std::int64_t> padding_idx_;
};

/// nn::Conv2d and tapegrad::conv2d share one options type (with `bias`: whether the layer has one).
using tapegrad::Conv2dOptions;
using tapegrad::MaxPool2dOptions;
using tapegrad::AvgPool2dOptions;

/// 2-D convolution layer. x: [N, in_channels, H, W] -> [N, out_channels, OH, OW] (see
/// tapegrad::conv2d for OH, OW). weight: [out_channels, in_channels/groups, kh, kw],
/// bias: [out_channels]; PyTorch's default init (uniform ±1/sqrt(fan_in),
/// fan_in = in_channels/groups·kh·kw).
class Conv2d : public Module {
 public:
  Conv2d(std::int64_t in_channels, std::int64_t out_channels, Size2 kernel_size,
         const Conv2dOptions& options = {});
  Tensor forward(const Tensor& x) override;
  Tensor& weight() { return *weight_; }
  Tensor& bias() { return *bias_; }
  const Conv2dOptions& options() const { return options_; }

 private:
  Conv2dOptions options_;
  Tensor* weight_;
  Tensor* bias_;
  Tensor no_bias_;
};

/// Max pooling, x: [N, C, H, W] -> [N, C, OH, OW] (see tapegrad::max_pool2d).
class MaxPool2d : public Module {
 public:
  /// Window `kernel_size`, stride = kernel_size.
  explicit MaxPool2d(Size2 kernel_size);
  explicit MaxPool2d(const MaxPool2dOptions& options);
  Tensor forward(const Tensor& x) override;

 private:
  MaxPool2dOptions options_;
};

/// Average pooling, x: [N, C, H, W] -> [N, C, OH, OW] (see tapegrad::avg_pool2d).
class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(Size2 kernel_size);
  explicit AvgPool2d(const AvgPool2dOptions& options);
  Tensor forward(const Tensor& x) override;

 private:
  AvgPool2dOptions options_;
};

/// Adaptive average pooling to a fixed output size, x: [N, C, H, W] or [C, H, W] ->
/// [.., OH, OW] (see tapegrad::adaptive_avg_pool2d), as torch.nn.AdaptiveAvgPool2d.
class AdaptiveAvgPool2d : public Module {
 public:
  explicit AdaptiveAvgPool2d(Size2 output_size) : output_size_(output_size) {}
  Tensor forward(const Tensor& x) override;
  Size2 output_size() const { return output_size_; }

 private:
  Size2 output_size_;
};

/// Adaptive max pooling to a fixed output size (see tapegrad::adaptive_max_pool2d), as
/// torch.nn.AdaptiveMaxPool2d (without return_indices: use the functional
/// adaptive_max_pool2d_with_indices for them).
class AdaptiveMaxPool2d : public Module {
 public:
  explicit AdaptiveMaxPool2d(Size2 output_size) : output_size_(output_size) {}
  Tensor forward(const Tensor& x) override;
  Size2 output_size() const { return output_size_; }

 private:
  Size2 output_size_;
};

/// Resampling to a size or by a scale factor (see tapegrad::interpolate), as torch.nn.Upsample:
/// `nn::Upsample({.scale_factor = {2.0}, .mode = InterpolateMode::bilinear})`. No parameters.
/// Throws ValueError unless exactly one of size and scale_factor is given; the other options
/// are checked against each input by interpolate.
class Upsample : public Module {
 public:
  explicit Upsample(const InterpolateOptions& options);
  Tensor forward(const Tensor& x) override;
  const InterpolateOptions& options() const { return options_; }

 private:
  InterpolateOptions options_;
};

/// torch.nn.UpsamplingNearest2d: Upsample with mode nearest, by size ({OH, OW} or one number)
/// or, with size empty, by scale_factor.
class UpsamplingNearest2d : public Upsample {
 public:
  explicit UpsamplingNearest2d(std::vector<std::int64_t> size, std::vector<double> scale_factor = {});
};

/// torch.nn.UpsamplingBilinear2d: Upsample with mode bilinear and align_corners true.
class UpsamplingBilinear2d : public Upsample {
 public:
  explicit UpsamplingBilinear2d(std::vector<std::int64_t> size, std::vector<double> scale_factor = {});
};

using tapegrad::ConvTranspose2dOptions;
using tapegrad::Conv1dOptions;
using tapegrad::MaxPool1dOptions;
using tapegrad::AvgPool1dOptions;

/// Transposed 2-D convolution layer, as torch.nn.ConvTranspose2d. x: [N, in_channels, H, W]
/// (or unbatched) -> [N, out_channels, OH, OW] (see tapegrad::conv_transpose2d for OH, OW).
/// weight: [in_channels, out_channels/groups, kh, kw], bias: [out_channels]; PyTorch's
/// default init (uniform ±1/sqrt(fan_in), fan_in = out_channels/groups·kh·kw: dim 1 of the
/// weight, as PyTorch computes it).
class ConvTranspose2d : public Module {
 public:
  ConvTranspose2d(std::int64_t in_channels, std::int64_t out_channels, Size2 kernel_size,
                  const ConvTranspose2dOptions& options = {});
  Tensor forward(const Tensor& x) override;
  Tensor& weight() { return *weight_; }
  /// Undefined when constructed with options.bias = false.
  Tensor& bias() { return *bias_; }
  const ConvTranspose2dOptions& options() const { return options_; }

 private:
  ConvTranspose2dOptions options_;
  Tensor* weight_;
  Tensor* bias_;
  Tensor no_bias_;
};

/// 1-D convolution layer, as torch.nn.Conv1d. x: [N, in_channels, L] (or [in_channels, L])
/// -> [N, out_channels, OL] (see tapegrad::conv1d). weight: [out_channels,
/// in_channels/groups, kernel_size], bias: [out_channels]; PyTorch's default init.
class Conv1d : public Module {
 public:
  Conv1d(std::int64_t in_channels, std::int64_t out_channels, std::int64_t kernel_size,
         const Conv1dOptions& options = {});
  Tensor forward(const Tensor& x) override;
  Tensor& weight() { return *weight_; }
  /// Undefined when constructed with options.bias = false.
  Tensor& bias() { return *bias_; }
  const Conv1dOptions& options() const { return options_; }

 private:
  Conv1dOptions options_;
  Tensor* weight_;
  Tensor* bias_;
  Tensor no_bias_;
};

/// Max pooling over L, x: [N, C, L] or [C, L] (see tapegrad::max_pool1d), as torch.nn.MaxPool1d
/// (without return_indices: use the functional max_pool1d_with_indices for them).
class MaxPool1d : public Module {
 public:
  explicit MaxPool1d(const MaxPool1dOptions& options) : options_(options) {}
  Tensor forward(const Tensor& x) override;
  const MaxPool1dOptions& options() const { return options_; }

 private:
  MaxPool1dOptions options_;
};

/// Average pooling over L, x: [N, C, L] or [C, L] (see tapegrad::avg_pool1d), as
/// torch.nn.AvgPool1d.
class AvgPool1d : public Module {
 public:
  explicit AvgPool1d(const AvgPool1dOptions& options) : options_(options) {}
  Tensor forward(const Tensor& x) override;
  const AvgPool1dOptions& options() const { return options_; }

 private:
  AvgPool1dOptions options_;
};

/// Element-wise max(x, 0); any shape.
class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override;
};
/// Element-wise 1/(1 + e^-x); any shape.
class Sigmoid : public Module {
 public:
  Tensor forward(const Tensor& x) override;
};
/// Element-wise tanh; any shape.
class Tanh : public Module {
 public:
  Tensor forward(const Tensor& x) override;
};
/// Element-wise gelu (see tapegrad::gelu); any shape.
class GELU : public Module {
 public:
  explicit GELU(GeluApproximate approximate = GeluApproximate::none) : approximate_(approximate) {}
  Tensor forward(const Tensor& x) override;

 private:
  GeluApproximate approximate_;
};
/// Element-wise x·sigmoid(x); any shape.
class SiLU : public Module {
 public:
  Tensor forward(const Tensor& x) override;
};
/// Element-wise leaky_relu with the given negative slope; any shape.
class LeakyReLU : public Module {
 public:
  explicit LeakyReLU(double negative_slope = 0.01) : negative_slope_(negative_slope) {}
  Tensor forward(const Tensor& x) override;

 private:
  double negative_slope_;
};
/// Element-wise elu with the given alpha; any shape.
class ELU : public Module {
 public:
  explicit ELU(double alpha = 1.0) : alpha_(alpha) {}
  Tensor forward(const Tensor& x) override;

 private:
  double alpha_;
};
/// Element-wise softplus log(1 + e^(beta·x)) / beta, x itself where beta·x > threshold.
class Softplus : public Module {
 public:
  explicit Softplus(double beta = 1.0, double threshold = 20.0)
      : beta_(beta), threshold_(threshold) {}
  Tensor forward(const Tensor& x) override;

 private:
  double beta_, threshold_;
};

/// Merges dims start_dim..end_dim: [N, C, H, W] -> [N, C·H·W] with the defaults.
class Flatten : public Module {
 public:
  explicit Flatten(std::int64_t start_dim = 1, std::int64_t end_dim = -1);
  Tensor forward(const Tensor& x) override;

 private:
  std::int64_t start_dim_, end_dim_;
};

/// In training, zeroes each element with probability p and scales the others by 1/(1-p);
/// the identity in evaluation mode. Any shape. Throws ValueError unless 0 <= p <= 1.
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5);
  Tensor forward(const Tensor& x) override;
  double p() const { return p_; }

 private:
  double p_;
};

struct BatchNormOptions {
  double eps = 1e-5;
  /// Weight of the new batch statistic in the running ones; empty means a cumulative
  /// average (1/num_batches_tracked), as PyTorch's momentum=None.
  std::optional<double> momentum = 0.1;
  /// Learnable per-channel weight (init 1) and bias (init 0).
  bool affine = true;
  /// Keep running_mean/running_var; without them evaluation also uses batch statistics.
  bool track_running_stats = true;
};
using BatchNorm1dOptions = BatchNormOptions;
using BatchNorm2dOptions = BatchNormOptions;

/// What BatchNorm1d and BatchNorm2d share (PyTorch's _BatchNorm): parameters weight, bias:
/// [num_features]; buffers running_mean (init 0), running_var (init 1): [num_features], and
/// num_batches_tracked: 0-dim i64, counting training batches. Training mode normalises with
/// the batch statistics and updates the running ones; evaluation mode normalises with the
/// running statistics.
class BatchNormBase : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  Tensor& weight() { return *weight_; }
  Tensor& bias() { return *bias_; }
  Tensor& running_mean() { return *running_mean_; }
  Tensor& running_var() { return *running_var_; }
  Tensor& num_batches_tracked() { return *num_batches_tracked_; }

 protected:
  /// The functional op the layer applies (tapegrad::batch_norm or batch_norm2d).
  using Functional = Tensor (*)(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                const Tensor&, bool, double, double);
  BatchNormBase(const char* layer, std::int64_t num_features, const BatchNormOptions& options,
                Functional functional);

 private:
  BatchNormOptions options_;
  Functional functional_;
  Tensor none_;
  Tensor* weight_ = &none_;
  Tensor* bias_ = &none_;
  Tensor* running_mean_ = &none_;
  Tensor* running_var_ = &none_;
  Tensor* num_batches_tracked_ = &none_;
};

/// Batch normalisation over x: [N, num_features] or [N, num_features, L] (see
/// tapegrad::batch_norm), as torch.nn.BatchNorm1d.
class BatchNorm1d : public BatchNormBase {
 public:
  explicit BatchNorm1d(std::int64_t num_features, const BatchNormOptions& options = {});
};

/// Batch normalisation over x: [N, num_features, H, W] (see tapegrad::batch_norm2d), as
/// torch.nn.BatchNorm2d.
class BatchNorm2d : public BatchNormBase {
 public:
  explicit BatchNorm2d(std::int64_t num_features, const BatchNormOptions& options = {});
};

struct LayerNormOptions {
  double eps = 1e-5;
  /// Learnable weight (init 1) and bias (init 0) of normalized_shape.
  bool elementwise_affine = true;
};

/// Layer normalisation over the trailing dims x: [*, normalized_shape] (see
/// tapegrad::layer_norm), as torch.nn.LayerNorm. Parameters weight, bias: normalized_shape.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(const Shape& normalized_shape, const LayerNormOptions& options = {});
  Tensor forward(const Tensor& x) override;
  /// Undefined without elementwise_affine.
  Tensor& weight() { return *weight_; }
  Tensor& bias() { return *bias_; }
  const Shape& normalized_shape() const { return normalized_shape_; }

 private:
  Shape normalized_shape_;
  LayerNormOptions options_;
  Tensor none_;
  Tensor* weight_ = &none_;
  Tensor* bias_ = &none_;
};

struct GroupNormOptions {
  double eps = 1e-5;
  /// Learnable per-channel weight (init 1) and bias (init 0).
  bool affine = true;
};

/// Group normalisation of x: [N, num_channels, *] in num_groups groups of channels (see
/// tapegrad::group_norm), as torch.nn.GroupNorm. Parameters weight, bias: [num_channels].
/// num_channels must be divisible by num_groups.
class GroupNorm : public Module {
 public:
  GroupNorm(std::int64_t num_groups, std::int64_t num_channels,
            const GroupNormOptions& options = {});
  Tensor forward(const Tensor& x) override;
  /// Undefined without affine.
  Tensor& weight() { return *weight_; }
  Tensor& bias() { return *bias_; }
  std::int64_t num_groups() const { return num_groups_; }

 private:
  std::int64_t num_groups_;
  GroupNormOptions options_;
  Tensor none_;
  Tensor* weight_ = &none_;
  Tensor* bias_ = &none_;
};

// ---- recurrent layers (nn/rnn.cpp) -------------------------------------------------------------

/// One LSTM step as a module, torch.nn.LSTMCell: parameters weight_ih [4H, input_size],
/// weight_hh [4H, H], bias_ih, bias_hh [4H] (without bias: none), all U(±1/√H) as PyTorch.
/// forward(input [B, input_size] or [input_size], {h, c} [B, H] or [H], zeros when absent)
/// -> {h', c'} (see tapegrad::lstm_cell).
class LSTMCell : public Module {
 public:
  LSTMCell(std::int64_t input_size, std::int64_t hidden_size, bool bias = true);
  std::tuple<Tensor, Tensor> forward(const Tensor& input,
                                     const std::optional<std::tuple<Tensor, Tensor>>& hx = {});
  Tensor& weight_ih() { return *weight_ih_; }
  Tensor& weight_hh() { return *weight_hh_; }
  /// Undefined without bias.
  Tensor& bias_ih() { return *bias_ih_; }
  Tensor& bias_hh() { return *bias_hh_; }

 private:
  std::int64_t hidden_size_;
  Tensor none_;
  Tensor *weight_ih_, *weight_hh_, *bias_ih_ = &none_, *bias_hh_ = &none_;
};

/// One GRU step as a module, torch.nn.GRUCell: parameters as LSTMCell's with 3H rows.
/// forward(input [B, input_size] or [input_size], h [B, H] or [H], zeros when absent) -> h'
/// (see tapegrad::gru_cell).
class GRUCell : public Module {
 public:
  GRUCell(std::int64_t input_size, std::int64_t hidden_size, bool bias = true);
  Tensor forward(const Tensor& input, const std::optional<Tensor>& hx = {});
  Tensor& weight_ih() { return *weight_ih_; }
  Tensor& weight_hh() { return *weight_hh_; }
  /// Undefined without bias.
  Tensor& bias_ih() { return *bias_ih_; }
  Tensor& bias_hh() { return *bias_hh_; }

 private:
  std::int64_t hidden_size_;
  Tensor none_;
  Tensor *weight_ih_, *weight_hh_, *bias_ih_ = &none_, *bias_hh_ = &none_;
};

struct RNNOptions {
  std::int64_t num_layers = 1;
  bool bias = true;
  /// Input and output as [B, T, features] instead of [T, B, features] (states stay [L, B, H]).
  bool batch_first = false;
  /// Dropout on the outputs of every layer but the last, in training mode.
  double dropout = 0.0;
  /// Not supported: true throws ValueError.
  bool bidirectional = false;
};

/// What LSTM and GRU share: options, the per-layer parameters weight_ih_l{k} [gates·H, in_k]
/// (in_0 = input_size, then H), weight_hh_l{k} [gates·H, H], bias_ih_l{k}, bias_hh_l{k}
/// [gates·H] (without bias: none), U(±1/√H) as PyTorch, and the checks of forward's inputs.
class RNNBase : public Module {
 public:
  const RNNOptions& options() const { return options_; }
  std::int64_t input_size() const { return input_size_; }
  std::int64_t hidden_size() const { return hidden_size_; }
  /// Parameter `name` ("weight_ih", "weight_hh", "bias_ih", "bias_hh") of layer k; undefined
  /// for a bias without bias.
  Tensor& parameter(const std::string& name, std::int64_t layer);

 protected:
  RNNBase(const char* layer, std::int64_t gates, std::int64_t input_size,
          std::int64_t hidden_size, const RNNOptions& options);
  /// Checks input: [T, B, input_size], [B, T, input_size] with batch_first, or unbatched
  /// [T, input_size].
  void check_input(const Tensor& input) const;
  /// Checks an initial state (`what` "h0" / "c0"): [L, B, H], or [L, H] for an unbatched input.
  void check_state(const char* what, const Tensor& state, const Tensor& input) const;
  /// Each layer's zero state for `input`: [B, H], or [H] unbatched.
  Tensor zero_state(const Tensor& input) const;
  /// One step of one layer: (input_gates, hidden_gates, the layer's state) -> its new state,
  /// whose first tensor is the layer's output h.
  using Step = std::function<std::vector<Tensor>(const Tensor&, const Tensor&, const std::vector<Tensor>&)>;
  /// Runs the layers over the checked input, layer by layer: one input projection over the
  /// sequence, then step by step (dropout between layers in training). `state` holds each
  /// layer's initial state and ends with its final one; returns the last layer's outputs in
  /// input's layout. With fold_hidden_bias (a step that only adds the two projections, as
  /// LSTM's), bias_hh joins bias_ih in the input projection, and the hidden projection per
  /// step has no bias.
  Tensor unroll(const Tensor& input, std::vector<std::vector<Tensor>>& state, const Step& step,
                bool fold_hidden_bias = false);

 private:
  const char* layer_;
  std::int64_t input_size_, hidden_size_;
  RNNOptions options_;
  struct Weights {
    Tensor *w_ih, *w_hh, *b_ih, *b_hh;
  };
  std::vector<Weights> weights_;
  Tensor none_;
};

/// A multi-layer LSTM, torch.nn.LSTM (unidirectional), unrolled over time on the tape: each
/// layer is one linear over the sequence (input projection), then per step one linear (hidden
/// projection) and one fused_lstm_cell.
/// forward(input, {h0, c0}) -> {output, {h_n, c_n}}: input [T, B, input_size] ([B, T, ...] with
/// batch_first, or unbatched [T, input_size]); h0, c0 [num_layers, B, H] ([num_layers, H]
/// unbatched), zeros when absent; output [T, B, H] (same layout as input), h_n, c_n as h0.
class LSTM : public RNNBase {
 public:
  LSTM(std::int64_t input_size, std::int64_t hidden_size, const RNNOptions& options = {});
  std::tuple<Tensor, std::tuple<Tensor, Tensor>> forward(
      const Tensor& input, const std::optional<std::tuple<Tensor, Tensor>>& hx = {});
};

/// A multi-layer GRU, torch.nn.GRU (unidirectional), unrolled over time on the tape (per layer
/// one linear over the sequence, then one linear and one fused_gru_cell per step). forward(input, h0) -> {output, h_n}, layouts as LSTM's.
class GRU : public RNNBase {
 public:
  GRU(std::int64_t input_size, std::int64_t hidden_size, const RNNOptions& options = {});
  std::tuple<Tensor, Tensor> forward(const Tensor& input, const std::optional<Tensor>& hx = {});
};

// ---- attention (nn/attention.cpp) -------------------------------------------------------------

struct MultiheadAttentionOptions {
  /// Dropout on the attention probabilities in training.
  double dropout = 0.0;
  /// in_proj_bias and out_proj.bias.
  bool bias = true;
  /// Inputs and output [N, L, E] instead of [L, N, E].
  bool batch_first = false;
  /// Sizes of key and value features; only embed_dim (the default) is supported.
  std::optional<std::int64_t> kdim{};
  std::optional<std::int64_t> vdim{};
};

/// Multi-head attention as torch.nn.MultiheadAttention (PyTorch 1.13), with its parameters:
/// in_proj_weight [3E, E] (rows: query, key, value projections; xavier_uniform),
/// in_proj_bias [3E] (0), out_proj.weight [E, E], out_proj.bias [E] (0). num_heads divides
/// embed_dim E. Each head attends with scaled_dot_product_attention over its E/num_heads
/// features.
class MultiheadAttention : public Module {
 public:
  MultiheadAttention(std::int64_t embed_dim, std::int64_t num_heads,
                     const MultiheadAttentionOptions& options = {});
  using Module::forward;
  /// query [L, N, E], key and value [S, N, E] ([N, L, E] and [N, S, E] with batch_first;
  /// [L, E] and [S, E] unbatched). key_padding_mask [N, S] ([S] unbatched): bool, true = ignore
  /// the key, or floating, added. attn_mask [L, S] or [N·num_heads, L, S]: bool, true = NOT
  /// allowed to attend, or floating, added. Returns (output of query's layout, weights): the
  /// attention probabilities [N, L, S] averaged over heads (average_attn_weights) or
  /// [N, num_heads, L, S], undefined unless need_weights. With need_weights the probabilities
  /// are computed by the composite (softmax, then matmul); without, by the fused primitive.
  std::tuple<Tensor, Tensor> forward(const Tensor& query, const Tensor& key, const Tensor& value,
                                     const Tensor& key_padding_mask = Tensor(),
                                     bool need_weights = true, const Tensor& attn_mask = Tensor(),
                                     bool average_attn_weights = true);
  Tensor& in_proj_weight() { return *in_proj_weight_; }
  /// Undefined without bias.
  Tensor& in_proj_bias() { return *in_proj_bias_; }
  const std::shared_ptr<Linear>& out_proj() const { return out_proj_; }
  std::int64_t embed_dim() const { return embed_dim_; }
  std::int64_t num_heads() const { return num_heads_; }

 private:
  std::int64_t embed_dim_, num_heads_;
  MultiheadAttentionOptions options_;
  Tensor none_;
  Tensor* in_proj_weight_ = &none_;
  Tensor* in_proj_bias_ = &none_;
  std::shared_ptr<Linear> out_proj_;
};

enum class TransformerActivation { relu, gelu };

struct TransformerEncoderLayerOptions {
  std::int64_t dim_feedforward = 2048;
  double dropout = 0.1;
  TransformerActivation activation = TransformerActivation::relu;
  double layer_norm_eps = 1e-5;
  bool batch_first = false;
  /// LayerNorm before attention and feed-forward (pre-norm) instead of after (post-norm).
  bool norm_first = false;
};

/// torch.nn.TransformerEncoderLayer (PyTorch 1.13) with its submodules self_attn, linear1,
/// dropout, linear2, norm1, norm2, dropout1, dropout2. src [L, N, d_model] ([N, L, d_model]
/// with batch_first, or [L, d_model]):
///   post-norm: x = norm1(x + dropout1(self_attn(x))); x = norm2(x + dropout2(ff(x)))
///   pre-norm:  x = x + dropout1(self_attn(norm1(x))); x = x + dropout2(ff(norm2(x)))
/// with ff(x) = linear2(dropout(activation(linear1(x)))).
class TransformerEncoderLayer : public Module {
 public:
  TransformerEncoderLayer(std::int64_t d_model, std::int64_t nhead,
                          const TransformerEncoderLayerOptions& options = {});
  Tensor forward(const Tensor& src) override;
  /// src_mask and src_key_padding_mask as MultiheadAttention's attn_mask and key_padding_mask.
  Tensor forward(const Tensor& src, const Tensor& src_mask,
                 const Tensor& src_key_padding_mask = Tensor());
  const std::shared_ptr<MultiheadAttention>& self_attn() const { return self_attn_; }
  const std::shared_ptr<Linear>& linear1() const { return linear1_; }
  const std::shared_ptr<Linear>& linear2() const { return linear2_; }
  const std::shared_ptr<LayerNorm>& norm1() const { return norm1_; }
  const std::shared_ptr<LayerNorm>& norm2() const { return norm2_; }

 private:
  TransformerEncoderLayerOptions options_;
  std::shared_ptr<MultiheadAttention> self_attn_;
  std::shared_ptr<Linear> linear1_;
  std::shared_ptr<Dropout> dropout_;
  std::shared_ptr<Linear> linear2_;
  std::shared_ptr<LayerNorm> norm1_, norm2_;
  std::shared_ptr<Dropout> dropout1_, dropout2_;
};

// ---- factories: std::make_shared with shorter names --------------------------------------------

std::shared_ptr<Sequential> sequential(std::initializer_list<Sequential::Layer> layers);
std::shared_ptr<ModuleList> module_list(std::initializer_list<std::shared_ptr<Module>> modules);
std::shared_ptr<ModuleDict> module_dict(
    std::initializer_list<std::pair<std::string, std::shared_ptr<Module>>> modules);
std::shared_ptr<Identity> identity();
std::shared_ptr<Linear> linear(std::int64_t in_features, std::int64_t out_features,
                               bool bias = true);
std::shared_ptr<Embedding> embedding(std::int64_t num_embeddings, std::int64_t embedding_dim,
                                     std::optional<std::int64_t> padding_idx = {});
std::shared_ptr<Conv2d> conv2d(std::int64_t in_channels, std::int64_t out_channels,
                               Size2 kernel_size, const Conv2dOptions& options = {});
std::shared_ptr<MaxPool2d> max_pool2d(Size2 kernel_size);
std::shared_ptr<MaxPool2d> max_pool2d(const MaxPool2dOptions& options);
std::shared_ptr<AvgPool2d> avg_pool2d(Size2 kernel_size);
std::shared_ptr<AvgPool2d> avg_pool2d(const AvgPool2dOptions& options);
std::shared_ptr<AdaptiveAvgPool2d> adaptive_avg_pool2d(Size2 output_size);
std::shared_ptr<AdaptiveMaxPool2d> adaptive_max_pool2d(Size2 output_size);
std::shared_ptr<Upsample> upsample(const InterpolateOptions& options);
std::shared_ptr<ReLU> relu();
std::shared_ptr<Sigmoid> sigmoid();
std::shared_ptr<Tanh> tanh();
std::shared_ptr<GELU> gelu(GeluApproximate approximate = GeluApproximate::none);
std::shared_ptr<SiLU> silu();
std::shared_ptr<LeakyReLU> leaky_relu(double negative_slope = 0.01);
std::shared_ptr<ELU> elu(double alpha = 1.0);
std::shared_ptr<Softplus> softplus(double beta = 1.0, double threshold = 20.0);
std::shared_ptr<Flatten> flatten(std::int64_t start_dim = 1, std::int64_t end_dim = -1);
std::shared_ptr<Dropout> dropout(double p = 0.5);
std::shared_ptr<BatchNorm1d> batch_norm1d(std::int64_t num_features,
                                          const BatchNormOptions& options = {});
std::shared_ptr<BatchNorm2d> batch_norm2d(std::int64_t num_features,
                                          const BatchNormOptions& options = {});
std::shared_ptr<LayerNorm> layer_norm(const Shape& normalized_shape,
                                      const LayerNormOptions& options = {});
std::shared_ptr<GroupNorm> group_norm(std::int64_t num_groups, std::int64_t num_channels,
                                      const GroupNormOptions& options = {});
std::shared_ptr<LSTMCell> lstm_cell(std::int64_t input_size, std::int64_t hidden_size,
                                    bool bias = true);
std::shared_ptr<GRUCell> gru_cell(std::int64_t input_size, std::int64_t hidden_size, bool bias = true);
std::shared_ptr<LSTM> lstm(std::int64_t input_size, std::int64_t hidden_size,
                           const RNNOptions& options = {});
std::shared_ptr<GRU> gru(std::int64_t input_size, std::int64_t hidden_size,
                         const RNNOptions& options = {});
std::shared_ptr<MultiheadAttention> multihead_attention(
    std::int64_t embed_dim, std::int64_t num_heads, const MultiheadAttentionOptions& options = {});
std::shared_ptr<TransformerEncoderLayer> transformer_encoder_layer(
    std::int64_t d_model, std::int64_t nhead, const TransformerEncoderLayerOptions& options = {});
std::shared_ptr<ConvTranspose2d> conv_transpose2d(std::int64_t in_channels, std::int64_t out_channels,
                                                  Size2 kernel_size, const ConvTranspose2dOptions& options = {});
std::shared_ptr<Conv1d> conv1d(std::int64_t in_channels, std::int64_t out_channels, std::int64_t kernel_size,
                               const Conv1dOptions& options = {});
std::shared_ptr<MaxPool1d> max_pool1d(const MaxPool1dOptions& options);
std::shared_ptr<AvgPool1d> avg_pool1d(const AvgPool1dOptions& options);

// ---- losses ----------------------------------------------------------------------------------

/// logits: [N, C, d1, ...], target: [N, d1, ...] i64 class indices -> scalar (or target's shape
/// with Reduction::none); tapegrad::cross_entropy.
struct CrossEntropyLoss {
  Reduction reduction = Reduction::mean;
  Tensor operator()(const Tensor& logits, const Tensor& target) const;
};
/// logp: [N, C, d1, ...] log-probabilities, target: [N, d1, ...] i64 -> scalar (or target's shape).
struct NLLLoss {
  Reduction reduction = Reduction::mean;
  Tensor operator()(const Tensor& logp, const Tensor& target) const;
};
/// (input - target)² reduced; equal shapes.
struct MSELoss {
  Reduction reduction = Reduction::mean;
  Tensor operator()(const Tensor& input, const Tensor& target) const;
};

// ---- initialisation (in place, drawing from the global generator: see manual_seed) -------------

enum class FanMode { fan_in, fan_out };
enum class Nonlinearity { linear, sigmoid, tanh, relu, leaky_relu };

/// PyTorch's calculate_gain: 1 (linear, sigmoid), 5/3 (tanh), √2 (relu),
/// √(2/(1 + a²)) (leaky_relu with negative slope a).
double calculate_gain(Nonlinearity nonlinearity, double a = 0.0);
/// fan_in = size(1)·receptive field, fan_out = size(0)·receptive field, for a tensor of rank
/// >= 2 ([out, in] or [out, in, kh, kw]); ValueError otherwise.
std::pair<std::int64_t, std::int64_t> fan_in_and_fan_out(const Tensor& t);

/// Each function fills the floating tensor `t` in place (without recording) and returns it.
Tensor& uniform_(Tensor& t, double low, double high);
Tensor& normal_(Tensor& t, double mean = 0.0, double std = 1.0);
Tensor& constant_(Tensor& t, double value);
Tensor& zeros_(Tensor& t);
Tensor& ones_(Tensor& t);
/// U(-b, b) with b = gain·√(3/fan), gain = calculate_gain(nonlinearity, a).
Tensor& kaiming_uniform_(Tensor& t, double a = 0.0, FanMode mode = FanMode::fan_in,
                         Nonlinearity nonlinearity = Nonlinearity::leaky_relu);
/// N(0, std²) with std = gain/√fan.
Tensor& kaiming_normal_(Tensor& t, double a = 0.0, FanMode mode = FanMode::fan_in,
                        Nonlinearity nonlinearity = Nonlinearity::leaky_relu);
/// U(-b, b) with b = gain·√(6/(fan_in + fan_out)).
Tensor& xavier_uniform_(Tensor& t, double gain = 1.0);
/// N(0, std²) with std = gain·√(2/(fan_in + fan_out)).
Tensor& xavier_normal_(Tensor& t, double gain = 1.0);

}  // namespace tapegrad::nn
