// The Bolt codec: pure functions between bytes and BoltFrames. No sockets, no state, so
// tests and fuzzers call them directly. Thread-safe (no shared state).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "dtx/rpc/bolt_frame.h"

namespace dtx::rpc {

inline constexpr size_t kDefaultMaxFrameSize = 16 * 1024 * 1024;

enum class DecodeStatus {
  kFrame,     // a whole frame was read: `consumed` bytes
  kNeedMore,  // the bytes are a valid prefix; `consumed` is the whole frame's size once known, else 0
  kError,     // the bytes can never be a valid frame: `error` says why
};

struct DecodeResult {
  DecodeStatus status;
  size_t consumed = 0;
  std::string error;
};

// Reads one frame from the start of `bytes` into `frame` (whose views then point into
// `bytes`). A frame larger than max_frame_size is an error as soon as its fixed header is
// read, before its body arrives. A v2 frame with a CRC32 trailer is checked.
DecodeResult DecodeFrame(std::string_view bytes, size_t max_frame_size, BoltFrame& frame);

// The size EncodeFrame will append for `frame`.
size_t EncodedSize(const BoltFrame& frame);

// Appends the wire form of `frame` to `out` (with the CRC32 trailer when frame.has_crc()).
// REQUIRES: the class name and the encoded header map each fit in 65535 bytes.
void EncodeFrame(const BoltFrame& frame, std::string& out);

// CRC32 as Bolt v2 computes it (the zlib / java.util.zip.CRC32 polynomial).
uint32_t BoltCrc32(std::string_view bytes);

}  // namespace dtx::rpc
