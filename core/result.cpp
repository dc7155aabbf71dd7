#include "core/result.hpp"

namespace vhostd {

const char* errc_name(Errc c) {
    switch (c) {
        case Errc::kOk: return "ok";
        case Errc::kInvalid: return "invalid";
        case Errc::kUnsupported: return "unsupported";
        case Errc::kOutOfRange: return "out of range";
        case Errc::kSystem: return "system error";
        case Errc::kBusy: return "busy";
        case Errc::kClosed: return "closed";
        case Errc::kState: return "bad state";
    }
    return "unknown";
}

}  // namespace vhostd
