// One line per event on stderr: "<UTC time> clipper-cpp <LEVEL> <message>".
#pragma once

#include <string>

namespace clipper::log {
void info(const std::string& message);
void warning(const std::string& message);
void error(const std::string& message);
}  // namespace clipper::log
