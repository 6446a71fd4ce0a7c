// libFuzzer target: arbitrary bytes into the Bolt decoder, read as a stream of frames.
// Properties checked: no crash or sanitizer report; `consumed` never exceeds the input; a
// frame that decodes re-encodes to bytes that decode to the same fields; the SOFA envelope
// reader accepts or rejects every frame without crashing.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "dtx/rpc/bolt_codec.h"
#include "dtx/rpc/sofa_message.h"

using namespace dtx::rpc;

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

bool SameFields(const BoltFrame& a, const BoltFrame& b) {
  return a.protocol == b.protocol && a.type == b.type && a.cmd_code == b.cmd_code && a.ver2 == b.ver2 &&
         a.request_id == b.request_id && a.codec == b.codec && a.timeout_ms == b.timeout_ms && a.status == b.status &&
         a.class_name == b.class_name && a.headers == b.headers && a.content == b.content &&
         (a.protocol == BoltProtocol::kV1 || (a.ver1 == b.ver1 && a.switches == b.switches));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  // A small maximum as well, so the oversize path is exercised.
  const size_t max_frame = size % 2 ? 512 : kDefaultMaxFrameSize;
  BoltFrame frame, again;
  while (!input.empty()) {
    DecodeResult r = DecodeFrame(input, max_frame, frame);
    if (r.status != DecodeStatus::kFrame) {
      Check(r.status == DecodeStatus::kNeedMore || !r.error.empty());
      if (r.status == DecodeStatus::kNeedMore && r.consumed != 0) Check(r.consumed > input.size());
      break;
    }
    Check(r.consumed > 0 && r.consumed <= input.size());

    std::string bytes;
    EncodeFrame(frame, bytes);
    Check(bytes.size() == EncodedSize(frame));
    DecodeResult r2 = DecodeFrame(bytes, kDefaultMaxFrameSize, again);
    Check(r2.status == DecodeStatus::kFrame && r2.consumed == bytes.size());
    Check(SameFields(frame, again));

    if (frame.is_response()) {
      (void)SofaResponse::FromFrame(frame).ToResult();
    } else {
      (void)SofaRequest::FromFrame(frame);
    }
    input.remove_prefix(r.consumed);
  }
  return 0;
}
