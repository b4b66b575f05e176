#pragma once
/// \file
/// Checkpoints: named tensors (a model's parameters and buffers, an optimizer's state) saved
/// to and loaded from one binary file.
///
/// ## File format, version 1
/// Every integer is little-endian.
///
/// | offset | size | field                                                        |
/// |--------|------|--------------------------------------------------------------|
/// | 0      | 8    | magic: the bytes `"TGCKPT\r\n"` (`54 47 43 4B 50 54 0D 0A`)  |
/// | 8      | 4    | u32 version = 1                                              |
/// | 12     | 4    | u32 reserved = 0                                             |
/// | 16     | 8    | u64 count: number of tensor records                          |
/// | 24     | 8    | u64 payload_size: bytes of the records that follow           |
/// | 32     | ...  | the records, back to back (payload_size bytes)               |
/// | end-4  | 4    | u32 CRC-32 (zlib's `crc32`) of every byte before it          |
///
/// One record:
///
/// | size        | field                                                          |
/// |-------------|----------------------------------------------------------------|
/// | 4           | u32 name_length, then name_length bytes of UTF-8 name          |
/// | 1           | u8 dtype: 0 = f32, 1 = f64, 2 = i64, 3 = bool (one byte each)  |
/// | 1           | u8 rank (0..8)                                                 |
/// | 8 × rank    | i64 sizes, outermost first                                     |
/// | numel × 1-8 | the values, row-major: IEEE-754, two's complement, 0 or 1      |
///
/// Names are unique and non-empty. The file size must be exactly 32 + payload_size + 4.
/// Writes go to `<path>.tmp`, which is flushed to disk (fsync) and renamed over `<path>`,
/// so an interrupted save leaves the previous file intact.
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tapegrad/tensor.hpp"

namespace tapegrad::nn {


/// Writes `tensors` to `path` atomically. Throws ValueError on an undefined tensor, an empty
/// or duplicate name, and IoError (naming the file and the system's reason) when writing
/// fails; the file previously at `path`, if any, is then left as it was.
void save_checkpoint(const std::string& path, const NamedTensors& tensors);

/// Reads every tensor of the file at `path`, in the order saved. Throws IoError on a missing
/// or unreadable file, a bad magic or version, a truncated or oversized file, a bad checksum
/// or a malformed record, each message naming the file and the values found.
NamedTensors load_checkpoint(const std::string& path);

/// Copies `values` into `targets` (matched by name) after checking that both hold exactly
/// the same names, shapes and dtypes. Nothing is copied unless everything matches. One error
/// lists every problem, naming `origin`: the missing names, the unexpected ones, each shape
/// and each dtype that differs (`'fc.weight': expected [2, 3], <origin> has [3, 2]`). Its type
/// is that of the first kind present: ValueError for missing or unexpected names, else
/// ShapeError, else DTypeError. Runs without recording.
void assign_named(const NamedTensors& targets, const NamedTensors& values,
                  std::string_view origin);

/// `assign_named(targets, load_checkpoint(path), path)`: loads a checkpoint into existing
/// tensors (e.g. `model.named_state()`), all or nothing.
void load_into(const std::string& path, const NamedTensors& targets);

/// The tensors whose name starts with `prefix`, with the prefix removed
/// (`{"model.fc.weight", ...}`, "model." -> `{"fc.weight", ...}`).
NamedTensors strip_prefix(const NamedTensors& tensors, std::string_view prefix);
/// The same tensors with `prefix` put before every name.
NamedTensors add_prefix(const NamedTensors& tensors, std::string_view prefix);

}  // namespace tapegrad::nn
