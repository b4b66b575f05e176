#pragma once
// The Boost.Graph view of a recorded graph: used by backward, the checker and DOT export.
// Only autograd/ includes this header.
#include <cstddef>
#include <vector>

#include <boost/graph/compressed_sparse_row_graph.hpp>

#include "autograd/tensor_impl.hpp"

namespace tapegrad::detail {

struct VertexProps {
  Node* node = nullptr;
};
struct EdgeProps {
  std::size_t input_slot = 0;  ///< which input of the consumer the producer feeds
};
/// Vertices are op records; an edge runs from a consumer to the producer of its input.
/// Compressed sparse rows: the graph is built once per pass from its edge list, in a few
/// arrays (an adjacency_list would allocate an edge list per vertex).
using Graph = boost::compressed_sparse_row_graph<boost::directedS, VertexProps, EdgeProps>;

/// The part of the tape reachable from some roots. While it lives, each node's `vertex`
/// field holds its vertex id.
struct TapeGraph {
  TapeGraph() = default;
  TapeGraph(TapeGraph&& other) noexcept : graph(std::move(other.graph)), nodes(std::move(other.nodes)) {
    other.nodes.clear();
  }
  TapeGraph& operator=(TapeGraph&&) = delete;
  ~TapeGraph();
  Graph graph;
  std::vector<Node*> nodes;  ///< by vertex id
};

TapeGraph build_graph(const std::vector<Node*>& roots);
/// Vertex ids ordered so that every consumer comes before the producers of its inputs.
std::vector<std::size_t> consumers_first(const TapeGraph& tg);

}  // namespace tapegrad::detail
