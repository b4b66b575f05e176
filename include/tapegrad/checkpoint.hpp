#pragma once
/// \file
/// Checkpoints: named tensors (a model's parameters and buffers, an optimizer's state) saved
/// to and loaded from one binary file: tapegrad's own format (save_checkpoint, below), or the
/// safetensors format that PyTorch and Hugging Face read (save_safetensors, at the end).
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
#include <map>
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

// ---- safetensors -----------------------------------------------------------------------------

/// \name safetensors
/// Weights that move between PyTorch and tapegrad.
///
/// ## Format (https://github.com/huggingface/safetensors)
/// | offset | size | field                                                              |
/// |--------|------|--------------------------------------------------------------------|
/// | 0      | 8    | u64 little-endian N: the length of the header                      |
/// | 8      | N    | the header: UTF-8 JSON, padded with spaces to a multiple of 8 bytes |
/// | 8 + N  | ...  | the data: every tensor's bytes, row-major, little-endian           |
///
/// The header is one JSON object. Each tensor is a key, its name, whose value is
/// `{"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}`: byte offsets into the
/// data, end - begin = numel × element size. An optional key `"__metadata__"` holds an object
/// of string -> string. dtypes: `F32`, `F64`, `I64` and `BOOL` (one byte, 0 or 1) are
/// tapegrad's f32, f64, i64 and bool; the format's others (F16, BF16, I32, U8, ...) are not
/// supported. A 0-dim tensor has shape `[]` and one element; an empty one takes no bytes.
///
/// tapegrad writes the header as the reference implementation does: compact JSON, no
/// spaces, `"__metadata__"` first when there is metadata (keys sorted), then the tensors in
/// the order given, each with the keys dtype, shape, data_offsets in that order; names are
/// written as UTF-8, escaping only `"`, `\` and control characters. The data follows in the
/// same order, back to back.
///
/// ## Names
/// Use `module.named_state()`: its names are the keys of PyTorch's `state_dict()` for the
/// same architecture (`"0.weight"` for child 0 of a Sequential, `"bn.running_mean"`, and
/// BatchNorm2d's i64 0-dim `"num_batches_tracked"`), so a file written by
/// `safetensors.torch.save_file(model.state_dict(), path)` loads into the tapegrad twin with
/// load_safetensors_into, and `model.load_state_dict(safetensors.torch.load_file(path))`
/// reads what save_safetensors wrote.
/// @{

/// Writes `tensors` and `metadata` to `path` in the safetensors format, atomically (through
/// `<path>.tmp`, fsync and rename, as save_checkpoint). Throws ValueError on an undefined
/// tensor, an empty or duplicate name, the reserved name `"__metadata__"` or a name or
/// metadata string that is not valid UTF-8; IoError (naming the file and the system's reason)
/// when writing fails, leaving any previous file at `path` as it was.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

/// Reads every tensor of the safetensors file at `path`, in the order of their data in the
/// file (the order given to save_safetensors). The whole file is checked before any tensor
/// is made; an IoError naming the file and the value found reports: a missing or unreadable
/// file, a header length past the end of the file, a header that is not valid UTF-8 JSON of
/// the shape above (a syntax error, a duplicate key, an unknown key, a missing field, a
/// non-integer size, anything but whitespace after the object), an empty name, a dtype
/// tapegrad does not support (F16, BF16, ... named as such) or does not know, a rank above
/// 8, sizes whose product overflows, offsets that are out of range, overlap, leave a gap or
/// disagree with numel × element size, bytes after the last tensor, and a BOOL byte other
/// than 0 or 1.
NamedTensors load_safetensors(const std::string& path);

/// The `"__metadata__"` of the safetensors file at `path` (empty when it has none). Checks
/// the whole file as load_safetensors does, with the same errors.
std::map<std::string, std::string> load_safetensors_metadata(const std::string& path);

/// `assign_named(targets, load_safetensors(path), path)`: loads a safetensors file into
/// existing tensors (`model.named_state()`), all or nothing; a file that lacks a name,
/// holds another, or differs in a shape or dtype throws the error of assign_named, which
/// lists every mismatch.
void load_safetensors_into(const std::string& path, const NamedTensors& targets);

/// @}

}  // namespace tapegrad::nn
