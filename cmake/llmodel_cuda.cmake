# The CUDA toolkit parts ggml-cuda links against, found before llama.cpp's
# own find_package(CUDAToolkit) so that a toolkit assembled from NVIDIA's
# wheels (nvcc and the runtime, but no cuBLAS and no driver stub) builds too.
#
#   LLMODEL_CUBLAS_ROOT  a folder with include/cublas_v2.h and lib/libcublas.so*
#                        (NVIDIA's wheel unpacked: .../nvidia/cu13), used when the
#                        toolkit has no cuBLAS of its own
#
# Sets LLMODEL_CUDA_EXTRA_INCLUDE (for ggml-cuda) and LLMODEL_CUDA_STUB_DRIVER.

set(LLMODEL_CUBLAS_ROOT "" CACHE PATH
    "cuBLAS headers and libraries (NVIDIA's wheel, unpacked) when the CUDA toolkit lacks them")
set(LLMODEL_CUDA_EXTRA_INCLUDE "")
set(LLMODEL_CUDA_STUB_DRIVER OFF)

if (LLMODEL_CUBLAS_ROOT)
    foreach (_lib cublas cublasLt)
        file(GLOB _found "${LLMODEL_CUBLAS_ROOT}/lib/lib${_lib}.so*" "${LLMODEL_CUBLAS_ROOT}/lib/${_lib}*.lib")
        list(SORT _found)
        list(LENGTH _found _n)
        if (_n EQUAL 0)
            message(FATAL_ERROR "LLMODEL_CUBLAS_ROOT=${LLMODEL_CUBLAS_ROOT} has no lib/lib${_lib}.so*")
        endif()
        list(GET _found 0 _first)
        set(CUDA_${_lib}_LIBRARY "${_first}" CACHE FILEPATH "" FORCE)
    endforeach()
    if (NOT EXISTS "${LLMODEL_CUBLAS_ROOT}/include/cublas_v2.h")
        message(FATAL_ERROR "LLMODEL_CUBLAS_ROOT=${LLMODEL_CUBLAS_ROOT} has no include/cublas_v2.h")
    endif()
    set(LLMODEL_CUDA_EXTRA_INCLUDE "${LLMODEL_CUBLAS_ROOT}/include")
endif()

find_package(CUDAToolkit REQUIRED)

# The driver (libcuda) is the user's, never ours; linking needs only a stub
# with its soname. Toolkits from wheels ship none: make one (no code of
# NVIDIA's: an empty library named libcuda.so.1). The real driver, or its
# absence, decides at load time; the loader skips the module when it is missing.
set(_stub "${CMAKE_BINARY_DIR}/cuda-driver-stub/stubs/libcuda.so")
if (UNIX AND NOT APPLE AND (NOT CUDA_cuda_driver_LIBRARY OR CUDA_cuda_driver_LIBRARY STREQUAL _stub))
    get_filename_component(_stub_dir "${_stub}" DIRECTORY)
    if (NOT EXISTS "${_stub}")
        file(MAKE_DIRECTORY "${_stub_dir}")
        file(WRITE "${_stub_dir}/stub.c" "int llmodel_cuda_driver_stub(void) { return 0; }\n")
        execute_process(
            COMMAND "${CMAKE_C_COMPILER}" -shared -fPIC -Wl,-soname,libcuda.so.1 -o "${_stub}" "${_stub_dir}/stub.c"
            RESULT_VARIABLE _rc ERROR_VARIABLE _err)
        if (NOT _rc EQUAL 0)
            message(FATAL_ERROR "could not build the libcuda link stub: ${_err}")
        endif()
    endif()
    set(CUDA_cuda_driver_LIBRARY "${_stub}" CACHE FILEPATH "" FORCE)
    if (NOT TARGET CUDA::cuda_driver)
        add_library(CUDA::cuda_driver SHARED IMPORTED)
        set_property(TARGET CUDA::cuda_driver PROPERTY IMPORTED_IMPLIB "${_stub}")
    endif()
    set(LLMODEL_CUDA_STUB_DRIVER ON)
    message(STATUS "CUDA driver: no libcuda in the toolkit, linking a stub (soname libcuda.so.1)")
endif()

# Applied to ggml-cuda once llama.cpp has defined it.
function(llmodel_configure_ggml_cuda)
    if (NOT TARGET ggml-cuda)
        return()
    endif()
    if (LLMODEL_CUDA_EXTRA_INCLUDE)
        target_include_directories(ggml-cuda SYSTEM PRIVATE "${LLMODEL_CUDA_EXTRA_INCLUDE}")
    endif()
    if (LLMODEL_CUDA_STUB_DRIVER)
        # the stub defines none of the driver's functions: keep it needed anyway
        target_link_options(ggml-cuda PRIVATE "LINKER:--no-as-needed")
    endif()
    # Where pip puts NVIDIA's runtime wheels (gpt4all[cuda]), seen from
    # site-packages/gpt4all/lib; a system toolkit on the loader path works too.
    if (UNIX AND NOT APPLE)
        if (CUDAToolkit_VERSION_MAJOR VERSION_GREATER_EQUAL 13)
            set(_wheel_dirs "$ORIGIN/../../nvidia/cu${CUDAToolkit_VERSION_MAJOR}/lib")
        else()
            set(_wheel_dirs "$ORIGIN/../../nvidia/cublas/lib;$ORIGIN/../../nvidia/cuda_runtime/lib")
        endif()
        # exactly this, in the build tree too (the package ships the build
        # tree's files): no build machine's folders
        set_target_properties(ggml-cuda PROPERTIES
            BUILD_WITH_INSTALL_RPATH ON
            INSTALL_RPATH "$ORIGIN;${_wheel_dirs}")
    endif()
endfunction()
