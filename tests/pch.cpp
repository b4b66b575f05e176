// Compiled only to build the test executables' precompiled header (tests/CMakeLists.txt).
