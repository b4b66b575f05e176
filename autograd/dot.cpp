// Graph export: the recorded graph as GraphViz DOT through boost::write_graphviz.
// Data flows left to right: leaves requiring grad (boxes) and ops (ellipses), with an edge
// from each producer to its consumer labelled with the tensor's shape.
#include <fstream>
#include <sstream>
#include <unordered_map>

#include <boost/graph/adjacency_list.hpp>
#include <boost/graph/graphviz.hpp>
#include <fmt/format.h>

#include "autograd/graph.hpp"
#include "autograd/tensor_impl.hpp"
#include "tapegrad/gradcheck.hpp"

namespace tapegrad {
namespace {

struct DotVertex {
  std::string label;
  bool leaf = false;
};
struct DotEdge {
  std::string label;
};
using DotGraph = boost::adjacency_list<boost::vecS, boost::vecS, boost::directedS, DotVertex,
                                       DotEdge>;

std::string escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  return out;
}

std::size_t saved_bytes(const detail::Node& n) {
  std::size_t bytes = 0;
  for (const auto& s : n.saved) {
    if (s.tensor.defined()) {
      bytes += static_cast<std::size_t>(s.tensor.numel()) * dtype_size(s.tensor.dtype());
    }
  }
  return bytes;
}

}  // namespace

std::string to_dot(const Tensor& output) {
  DotGraph g;
  if (output.defined() && output.impl()->grad_fn) {
    detail::TapeGraph tg = detail::build_graph({output.impl()->grad_fn.get()});
    std::vector<std::size_t> op_vertex(tg.nodes.size());
    for (std::size_t v = 0; v < tg.nodes.size(); ++v) {
      const detail::Node& n = *tg.nodes[v];
      const std::string attrs = n.op->attributes();
      op_vertex[v] = boost::add_vertex(
          DotVertex{fmt::format("{}{}\n{} {}\nsaved {} B{}", n.op->name(),
                                attrs.empty() ? "" : "\n" + attrs, n.out_meta.shape,
                                n.out_meta.dtype, saved_bytes(n), n.released ? " (freed)" : ""),
                    false},
          g);
    }
    std::unordered_map<const detail::TensorImpl*, std::size_t> leaf_vertex;
    for (std::size_t v = 0; v < tg.nodes.size(); ++v) {
      const detail::Node& n = *tg.nodes[v];
      for (std::size_t i = 0; i < n.inputs.size(); ++i) {
        const auto& in = n.inputs[i];
        const std::string shape = fmt::format("{}", in.meta.shape);
        if (in.producer) {
          boost::add_edge(op_vertex[static_cast<std::size_t>(in.producer->vertex)], op_vertex[v],
                          DotEdge{shape}, g);
        } else if (in.leaf) {
          auto [it, fresh] = leaf_vertex.try_emplace(in.leaf.get(), 0);
          if (fresh) {
            it->second = boost::add_vertex(
                DotVertex{fmt::format("leaf (requires grad)\n{} {}", in.meta.shape,
                                      in.meta.dtype), true}, g);
          }
          boost::add_edge(it->second, op_vertex[v], DotEdge{shape}, g);
        }
      }
    }
  }
  std::ostringstream os;
  boost::write_graphviz(
      os, g,
      [&g](std::ostream& o, std::size_t v) {
        const DotVertex& d = g[v];
        o << "[label=\"" << escape(d.label) << "\""
          << (d.leaf ? ", shape=box, style=filled, fillcolor=lightblue" : ", shape=ellipse")
          << "]";
      },
      [&g](std::ostream& o, const DotGraph::edge_descriptor& e) {
        o << "[label=\"" << escape(g[e].label) << "\"]";
      },
      [](std::ostream& o) { o << "rankdir=LR;\n"; });
  return os.str();
}

void write_dot(const Tensor& output, const std::string& path) {
  std::ofstream f(path);
  if (!f) throw IoError(fmt::format("write_dot: cannot open '{}' for writing", path));
  f << to_dot(output);
  if (!f) throw IoError(fmt::format("write_dot: writing '{}' failed", path));
}

}  // namespace tapegrad
