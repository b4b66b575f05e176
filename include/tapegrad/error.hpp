#pragma once
/// \file
/// The exceptions tapegrad throws. Every message starts with the op or function name,
/// states the contract that was broken and prints the values involved.
#include <stdexcept>
#include <string>

namespace tapegrad {

/// Base class of every error tapegrad throws on bad input or misuse.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Shapes that do not fit an op's contract (rank, sizes, broadcasting, impossible output sizes).
class ShapeError : public Error {
 public:
  using Error::Error;
};

/// Values outside an op's contract (negative stride, bad index, non-finite option...).
class ValueError : public Error {
 public:
  using Error::Error;
};

/// A dtype an op does not accept, or two operands whose dtypes differ.
class DTypeError : public Error {
 public:
  using Error::Error;
};

/// Misuse of the autograd graph (second backward through a freed graph, bad seed, a VJP
/// that broke its contract...).
class GraphError : public Error {
 public:
  using Error::Error;
};

/// A file that cannot be read or written, or whose content is malformed.
class IoError : public Error {
 public:
  using Error::Error;
};

}  // namespace tapegrad
