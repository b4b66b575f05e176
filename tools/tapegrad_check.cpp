// tapegrad-check: lists every registered op and runs each of its samples through gradcheck
// and the op contract checks; one line per op (cases, worst relative error, status).
// Exit code 0 when every op passes, 1 on any failure, 2 on bad usage.
//   tapegrad-check [--op NAME]... [--verbose] [--list]
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

namespace tg = tapegrad;

int main(int argc, char** argv) {
  std::vector<std::string> only;
  bool verbose = false, list = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--op") == 0 && i + 1 < argc) {
      only.emplace_back(argv[++i]);
    } else if (std::strcmp(argv[i], "--verbose") == 0 || std::strcmp(argv[i], "-v") == 0) {
      verbose = true;
    } else if (std::strcmp(argv[i], "--list") == 0) {
      list = true;
    } else {
      fmt::print(stderr, "usage: {} [--op NAME]... [--verbose] [--list]\n", argv[0]);
      return 2;
    }
  }
  std::vector<tg::OpInfo> ops;
  try {
    if (only.empty()) {
      ops = tg::registered_ops();
    } else {
      for (const auto& name : only) ops.push_back(tg::find_op(name));
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "tapegrad-check: {}\n", e.what());
    return 2;
  }
  if (list) {
    for (const auto& op : ops) fmt::print("{}\n", op.name);
    return 0;
  }
  std::size_t failed = 0, cases = 0;
  for (const auto& op : ops) {
    const tg::OpCheckReport r = tg::check_op(op);
    fmt::print("{}\n", r.to_string(verbose));
    cases += r.cases.size();
    if (!r.passed()) ++failed;
  }
  fmt::print("{} ops, {} cases: {}\n", ops.size(), cases,
             failed == 0 ? std::string("all passed") : fmt::format("{} FAILED", failed));
  return failed == 0 ? 0 : 1;
}
