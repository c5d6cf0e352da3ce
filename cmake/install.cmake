# Installing dtrain: `cmake --install build --prefix P` gives
#   P/include/dtrain/{dtrain,runtime,allreduce,paramserver}/*.h   (#include <dtrain/dtrain.h>)
#   P/lib/libdtrain*.a, P/lib/libdtrain_cuda.so (when built: the GPU plugin, opened on demand)
#   P/bin/{mnist_train,custom_model,dtrain_bench,dtrainrun}
#   P/lib/cmake/dtrain/  find_package(dtrain) -> target dtrain::dtrain
#   P/lib/pkgconfig/dtrain.pc
# tests/install_test.sh builds examples/custom_model.cc out of tree against such a prefix, both ways.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# Everything under lib/ (not a multiarch lib/x86_64-linux-gnu): the GPU plugin is looked for
# in ../lib from the program, and dtrain.pc finds the libraries relative to itself.
set(DTRAIN_CMAKE_DIR lib/cmake/dtrain)
foreach(dir dtrain runtime allreduce paramserver)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${dir}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/dtrain/${dir}
          FILES_MATCHING PATTERN "*.h" PATTERN "cuda" EXCLUDE)
endforeach()

install(TARGETS dtrain dtrain_runtime dtrain_allreduce dtrain_paramserver dtrain_dnnl
        EXPORT dtrainTargets
        ARCHIVE DESTINATION lib
        LIBRARY DESTINATION lib)
install(TARGETS mnist_train custom_model dtrain_bench dtrainrun RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
if(TARGET dtrain_cuda_plugin)
  # Where the runtime looks for it: next to the program, or in ../lib.
  install(TARGETS dtrain_cuda_plugin LIBRARY DESTINATION lib)
endif()

install(EXPORT dtrainTargets NAMESPACE dtrain:: DESTINATION ${DTRAIN_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/dtrainConfig.cmake.in
                              ${CMAKE_BINARY_DIR}/dtrainConfig.cmake
                              INSTALL_DESTINATION ${DTRAIN_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_BINARY_DIR}/dtrainConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/dtrainConfig.cmake ${CMAKE_BINARY_DIR}/dtrainConfigVersion.cmake
        DESTINATION ${DTRAIN_CMAKE_DIR})

configure_file(${PROJECT_SOURCE_DIR}/cmake/dtrain.pc.in ${CMAKE_BINARY_DIR}/dtrain.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/dtrain.pc DESTINATION lib/pkgconfig)
