// Logging for every dtx part goes through spdlog. Call InitLogging once from main();
// libraries log with spdlog's macros or functions (SPDLOG_INFO, spdlog::warn, ...).
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

#include "dtx/common/status.h"

namespace dtx {

// level: trace, debug, info, warn, error, critical, off.
// Logs go to stderr with a timestamp, level and thread id.
Status InitLogging(std::string_view level);

}  // namespace dtx
