// Helpers shared by the rpc tests.
#pragma once

#include <fstream>
#include <sstream>
#include <string>

#ifndef DTX_TESTDATA_DIR
#error "DTX_TESTDATA_DIR must name the tests/rpc/testdata folder"
#endif

namespace dtx::rpc::testing {

// The bytes of a file under tests/rpc/testdata.
inline std::string ReadTestData(const std::string& name) {
  std::ifstream in(std::string(DTX_TESTDATA_DIR) + "/" + name, std::ios::binary);
  if (!in) throw std::runtime_error("missing test data " + name);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace dtx::rpc::testing
